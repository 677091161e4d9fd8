"""``load_from`` is strict: a mismatched checkpoint is one clear error.

mmengine's ``Runner.load_checkpoint`` only warns on missing, unexpected or
shape-mismatched keys; ``UnoRunner`` fails (exit 2 from the tools) unless
the config sets ``load_strict = False``.
"""
import copy
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from tests.conftest import REPO, mlflow_store
from tests.tools import run_tool
from uno.engine import UnoTrainer, build_runner
from uno.errors import UnoConfigError

SMOKE = 'configs/smoke/flow_mot-tiny_1xb8-iter200_shapes-t2i.py'
UNO = 'configs/uno/uno_mot-tiny_1xb8-iter200_shapes.py'


def _checkpoint(cfg, path, **llm):
    """A checkpoint of ``cfg``'s trainer, with ``llm`` overrides."""
    model = copy.deepcopy(cfg.model)
    model.llm.update(llm)
    torch.manual_seed(0)
    trainer = UnoTrainer(model=model, objectives=cfg.objectives)
    torch.save(dict(meta=dict(iter=1), state_dict=trainer.state_dict()),
               path)
    return str(path)


def _runner(cfg_path, tmp_path, **options):
    cfg = Config.fromfile(osp.join(REPO, cfg_path))
    cfg.work_dir = str(tmp_path / 'work')
    cfg.merge_from_dict(options)
    return build_runner(cfg)


def test_mismatch_raises_one_line_naming_the_keys(tmp_path):
    cfg = Config.fromfile(osp.join(REPO, SMOKE))
    small = _checkpoint(cfg, tmp_path / 'small.pth', hidden_size=32)
    runner = _runner(SMOKE, tmp_path)
    with pytest.raises(UnoConfigError) as err:
        runner.load_checkpoint(small)
    msg = str(err.value)
    assert '\n' not in msg and msg.startswith(f'load_from={small} does not')
    assert 'model.embed_tokens.weight: checkpoint (128, 32) vs model ' \
        '(128, 64)' in msg and 'load_strict=False' in msg
    # the same size loads, and a relaxed config loads what matches
    runner.load_checkpoint(_checkpoint(cfg, tmp_path / 'same.pth'))
    relaxed = _runner(SMOKE, tmp_path, load_strict=False)
    relaxed.load_checkpoint(small)


def test_objective_heads_may_differ_under_load_from_only(tmp_path):
    uno = Config.fromfile(osp.join(REPO, UNO))
    full = _checkpoint(uno, tmp_path / 'uno.pth')  # has a projector
    no_reg = _runner(UNO, tmp_path, objectives=dict(
        regression=dict(weight=0.0)))
    assert not any(k.startswith('objectives.')
                   for k in no_reg.model.state_dict())
    no_reg.load_checkpoint(full)  # a dropped objective head is fine
    no_reg.cfg.resume = True  # but not when resuming
    with pytest.raises(UnoConfigError, match='unexpected: objectives.'):
        no_reg.load_checkpoint(full)


def test_metaqueries_may_be_resized_under_load_from_only(tmp_path):
    uno = Config.fromfile(osp.join(REPO, UNO))  # 16 metaqueries
    mq16 = _checkpoint(uno, tmp_path / 'mq16.pth')
    saved = torch.load(mq16)['state_dict']
    mq64 = _runner(UNO, tmp_path, model=dict(metaquery=dict(num_queries=64)))
    before = {k: v.clone() for k, v in mq64.model.state_dict().items()}
    mq64.load_checkpoint(mq16)  # resized: left as built, the rest loads
    after = mq64.model.state_dict()
    for key, value in after.items():
        if key.startswith('model.metaquery.'):
            assert torch.equal(value, before[key])
        elif key in saved:
            assert torch.equal(value, saved[key]), key
    mq64.cfg.resume = True  # resuming must match exactly
    with pytest.raises(UnoConfigError, match='model.metaquery.'):
        mq64.load_checkpoint(mq16)


def test_missing_load_from_fails_before_building(tmp_path):
    cfg = Config.fromfile(osp.join(REPO, SMOKE))
    cfg.work_dir = str(tmp_path / 'work')
    cfg.load_from = str(tmp_path / 'nope.pth')
    with pytest.raises(UnoConfigError, match=f'load_from={cfg.load_from}'):
        build_runner(cfg)
    assert not osp.exists(cfg.work_dir)


def test_train_exits_2_on_mismatch_and_trains_when_relaxed(
        tmp_path, monkeypatch, capsys):
    small = _checkpoint(Config.fromfile(osp.join(REPO, SMOKE)),
                        tmp_path / 'small.pth', hidden_size=32)
    monkeypatch.setenv('MLFLOW_TRACKING_URI',
                       mlflow_store(tmp_path / 'mlflow.db'))

    def train(*options):
        return run_tool('train', [
            SMOKE, '--work-dir', str(tmp_path / 'work'), '--cfg-options',
            'train_cfg.max_iters=1', 'train_cfg.val_interval=1000',
            'train_dataloader.batch_size=2', f'load_from={small}', *options
        ], monkeypatch, capsys)

    code, _, err = train()
    assert code == 2, err[-3000:]
    lines = [x for x in err.splitlines() if x.strip()]
    assert lines[-1].startswith(f'error: load_from={small} does not match')
    assert 'model.embed_tokens.weight' in lines[-1]
    assert 'Traceback' not in err
    code, _, err = train('load_strict=False')
    assert code == 0, err[-3000:]
    assert osp.isfile(tmp_path / 'work' / 'iter_1.pth')


def test_resume_never_runs_config_code_in_meta(tmp_path):
    """mmengine's ``Runner.resume`` would run ``meta['config']`` through
    ``Config.fromstring``; uno's ``load_checkpoint`` drops it first."""
    cfg = Config.fromfile(osp.join(REPO, SMOKE))
    path = _checkpoint(cfg, tmp_path / 'code.pth')
    marker = tmp_path / 'ran'
    runner = _runner(SMOKE, tmp_path, resume=True)
    checkpoint = torch.load(path)
    checkpoint['meta'].update(epoch=0, config=(
        f"__import__('os').mkdir({str(marker)!r})\n"))
    checkpoint['message_hub'] = runner.message_hub.state_dict()
    torch.save(checkpoint, path)
    runner.resume(path)
    assert runner.iter == 1 and not marker.exists()
