"""Every config loads, validates and builds; ablations are pure deltas."""
import glob
import os.path as osp

import pytest
from mmengine.config import Config

from tests.conftest import REPO
from uno.engine.runner import plan_options
from uno.utils.config_check import validate_config
from uno.utils.config_diff import MISSING, config_diff

CONFIGS = sorted(
    p for p in glob.glob(osp.join(REPO, 'configs', '**', '*.py'),
                         recursive=True) if '_base_' not in p)
BASELINE = osp.join(REPO, 'configs/uno/uno_mot-mini_1xb8-iter600_shapes.py')
SFT = osp.join(REPO, 'configs/sft/sft_mot-mini_1xb8-iter600_shapes.py')
# (UNO, SFT) pairs that must differ only in `objectives`
PAIRS = [(BASELINE, SFT),
         (osp.join(REPO, 'configs/uno/uno_mot-tiny_1xb8-iter200_shapes.py'),
          osp.join(REPO, 'configs/sft/sft_mot-tiny_1xb8-iter200_shapes.py'))]

# ablation folder -> the only keys its configs may change
INTENDED = {
    'objective_weights': ('objectives.caption.weight',
                          'objectives.regression.weight'),
    'metaquery_count': ('model.metaquery.num_queries',
                        'objectives.regression.resample'),
    'regression_target': ('objectives.regression.target_space', ),
    'regression_loss': ('objectives.regression.loss', ),
    'timestep_window': ('objectives.caption.timestep_window',
                        'objectives.regression.timestep_window'),
    'analysis': ('custom_hooks', ),
}


def _rel(path):
    return osp.relpath(path, REPO)


@pytest.mark.parametrize('path', CONFIGS, ids=_rel)
def test_config_loads_validates_and_dumps(path, tmp_path):
    cfg = Config.fromfile(path)
    validate_config(cfg)
    assert 'objectives' in cfg and cfg.model.type == 'UnoModel'
    cfg.dump(str(tmp_path / 'dumped.py'))
    again = Config.fromfile(str(tmp_path / 'dumped.py'))
    assert config_diff(cfg, again) == []


@pytest.mark.parametrize('path', [p for p in CONFIGS if '/ablations/' in p],
                         ids=_rel)
def test_ablation_changes_only_its_knob(path):
    folder = osp.basename(osp.dirname(path))
    diff = config_diff(Config.fromfile(BASELINE), Config.fromfile(path))
    assert diff, f'{_rel(path)} does not change anything'
    for key, old, new in diff:
        assert key.startswith(INTENDED[folder]), (key, old, new)
    assert all(new is not MISSING for _, _, new in diff)
    assert len(open(path).read().splitlines()) <= 15


@pytest.mark.parametrize('uno,sft', PAIRS, ids=lambda p: _rel(p))
def test_uno_and_sft_differ_only_in_objectives(uno, sft):
    diff = config_diff(Config.fromfile(sft), Config.fromfile(uno))
    assert diff and all(k.startswith('objectives.') for k, _, _ in diff)


def test_plan_options_derive_from_objectives_and_model():
    uno = plan_options(Config.fromfile(BASELINE))
    assert uno == dict(caption=True, num_queries=16,
                       queries_see_caption=False)
    reg0 = Config.fromfile(osp.join(
        REPO, 'configs/ablations/objective_weights/'
        'uno_mot-mini_1xb8-iter600_shapes_reg0.0.py'))
    assert plan_options(reg0)['num_queries'] == 0
    sft = Config.fromfile(SFT)
    assert plan_options(sft) == dict(caption=False, num_queries=0,
                                     queries_see_caption=False)
