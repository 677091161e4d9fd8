"""tools/misc/export_weights.py: a checkpoint -> one safetensors file.

A ``.pth`` checkpoint and a sharded checkpoint folder of the same trainer
export to the same tensors, which ``load_model_weights`` loads back into a
``UnoModel`` built from the config.
"""
import importlib.util
import os
import os.path as osp
import warnings

import pytest
import torch
from mmengine.config import Config
from safetensors import safe_open
from safetensors.torch import load_file

from tests.conftest import REPO
from tests.tools import run_tool
from uno.engine import UnoTrainer
from uno.engine.checkpoint import CheckpointError
from uno.engine.sharded_checkpoint import save_sharded
from uno.engine.weights import load_model_weights
from uno.registry import MODELS

CONFIG = osp.join(REPO, 'configs/uno/uno_mot-tiny_1xb8-iter200_shapes.py')
TOOL = osp.join(REPO, 'tools/misc/export_weights.py')


def _tool():
    spec = importlib.util.spec_from_file_location('export_weights', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    """A trained-looking trainer saved as a .pth and as a sharded folder."""
    tmp = tmp_path_factory.mktemp('ckpt')
    cfg = Config.fromfile(CONFIG)
    torch.manual_seed(0)
    trainer = UnoTrainer(model=cfg.model, objectives=cfg.objectives)
    with torch.no_grad():  # move the (zero-initialised) heads too
        for p in trainer.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    optimizer = torch.optim.AdamW(
        [p for p in trainer.parameters() if p.requires_grad])
    meta = dict(iter=2, cfg=cfg.pretty_text)
    pth = tmp / 'iter_2.pth'
    torch.save(dict(meta=meta, state_dict=trainer.state_dict(),
                    optimizer=optimizer.state_dict()), pth)
    folder = tmp / 'sharded' / 'iter_2.pth'
    os.makedirs(folder.parent)
    with warnings.catch_warnings():  # DCP in a single process warns
        warnings.simplefilter('ignore')
        save_sharded(str(folder), trainer, optimizer, dict(meta=meta))
    return cfg, trainer, str(pth), str(folder)


def _fresh(cfg, **llm):
    model = cfg.model.copy()
    model.llm = dict(model.llm, **llm)
    return MODELS.build(model)


@pytest.mark.parametrize('source', ['pth', 'sharded'])
def test_export_loads_back_into_a_model_from_the_config(
        checkpoints, tmp_path, source):
    cfg, trainer, pth, folder = checkpoints
    out = str(tmp_path / 'model.safetensors')
    done = _tool().export_weights(pth if source == 'pth' else folder, out,
                                  chunk_mb=0, progress=False)
    state = load_file(out)
    expected = trainer.model.state_dict()
    assert done['tensors'] == len(state) and set(state) == set(expected)
    model = _fresh(cfg)
    report = load_model_weights(model, state)
    assert not any(report.values())
    for key, value in model.state_dict().items():
        assert torch.equal(value, expected[key]), key
    with safe_open(out, 'pt') as f:
        meta = f.metadata()
    assert meta['uno_iter'] == '2' and 'UnoModel' in meta['uno_config']


def test_selection_flags(checkpoints, tmp_path):
    cfg, trainer, pth, folder = checkpoints
    tool = _tool()
    gen = str(tmp_path / 'gen.safetensors')
    tool.export_weights(folder, gen, expert_only='gen', dtype='bf16',
                        progress=False)
    state = load_file(gen)
    assert state and all('.gen.' in k for k in state)
    assert all(v.dtype == torch.bfloat16 for v in state.values())
    assert 'decoder.norm.gen.weight' in state
    heads = str(tmp_path / 'heads.safetensors')
    tool.export_weights(pth, heads, with_objectives=True,
                        exclude=['decoder.*'], progress=False)
    state = load_file(heads)
    names = [k for k in state if k.startswith('objectives.')]
    assert names and all(
        k.startswith('objectives.regression.projector.') for k in names)
    assert not any(k.startswith('decoder.') for k in state)
    projector = trainer.objectives.objectives['regression'].projector
    assert torch.equal(state['objectives.regression.projector.0.weight'],
                       projector[0].weight)


def test_mismatched_model_fails_naming_the_keys(checkpoints, tmp_path):
    cfg, _, pth, _ = checkpoints
    out = str(tmp_path / 'model.safetensors')
    _tool().export_weights(pth, out, progress=False)
    with pytest.raises(CheckpointError) as err:
        load_model_weights(_fresh(cfg, hidden_size=32), load_file(out))
    assert 'does not match the model' in str(err.value)
    assert 'connector.0.bias: checkpoint (64,) vs model (32,)' in str(
        err.value)


def test_cli(checkpoints, tmp_path, monkeypatch, capsys):
    _, _, _, folder = checkpoints
    out = tmp_path / 'cli.safetensors'

    def run(*args):
        return run_tool('misc/export_weights', [str(a) for a in args],
                        monkeypatch, capsys)

    code, stdout, err = run(folder, out, '--expert-only', 'gen')
    assert code == 0, err[-2000:]
    assert stdout.startswith('wrote ') and out.is_file()
    code, _, err = run(tmp_path / 'nope.pth', out)
    assert code == 2
    assert err.strip().splitlines()[-1].startswith(
        f'error: checkpoint {tmp_path}/nope.pth does not exist')
