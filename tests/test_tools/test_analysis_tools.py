"""tools/analysis/plot_gradient_flow.py and tools/analysis/pca_hidden.py.

The plot tool draws a PNG from a fabricated ``scalars.json`` of the form
``GradientFlowHook`` writes; the PCA tool runs end to end on a tiny random
checkpoint saved as a training ``.pth``.
"""
import importlib.util
import json
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from tests.conftest import REPO
from uno.engine import UnoTrainer
from uno.engine.checkpoint import save_checkpoint_file

UNO = osp.join(REPO, 'configs/uno/uno_mot-tiny_1xb8-iter200_shapes.py')
PNG = b'\x89PNG\r\n\x1a\n'


def _tool(name):
    spec = importlib.util.spec_from_file_location(
        name, osp.join(REPO, 'tools/analysis', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_scalars(work_dir, layers=2, steps=(10, 20, 30)):
    vis = work_dir / '20250101_000000' / 'vis_data'
    vis.mkdir(parents=True)
    with open(vis / 'scalars.json', 'w') as f:
        for step in steps:
            f.write(json.dumps(dict(loss=1.0, iter=step, step=step)) + '\n')
            row = dict(step=step)
            for i in range(1, layers + 1):
                row[f'gradflow/flow/norm/layer{i}'] = 0.1 * i
                row[f'gradflow/caption/norm/layer{i}'] = 0.2 * i + step / 1e3
                row[f'gradflow/cos_flow_caption/layer{i}'] = 0.1 - 0.05 * i
            f.write(json.dumps(row) + '\n')


def test_plot_gradient_flow_from_scalars(tmp_path, capsys):
    plot = _tool('plot_gradient_flow')
    _write_scalars(tmp_path / 'work')
    rows = plot.read_local(str(tmp_path / 'work'))
    series = plot.to_series(rows)
    assert sorted(series['norm']) == ['caption', 'flow']
    assert sorted(series['cos']['caption']) == [1, 2]
    assert plot.flow_name(series) == 'flow'
    ratios = plot.step_ratios(series, 'flow')
    assert ratios['caption'][1][0] == (10, pytest.approx(0.21 / 0.1))
    out = tmp_path / 'gf.png'
    assert plot.main([str(tmp_path / 'work'), '--out', str(out)]) == 0
    assert out.read_bytes()[:8] == PNG
    table = capsys.readouterr().out
    assert '3 measurements' in table and 'caption' in table
    # a run without the hook: a clear message, no plot
    (tmp_path / 'empty').mkdir()
    assert plot.main([str(tmp_path / 'empty'), '--out',
                      str(tmp_path / 'no.png')]) == 1
    assert not (tmp_path / 'no.png').exists()


@pytest.fixture(scope='module')
def tiny_checkpoint(tmp_path_factory):
    cfg = Config.fromfile(UNO)
    torch.manual_seed(0)
    trainer = UnoTrainer(model=cfg.model, objectives=cfg.objectives)
    path = tmp_path_factory.mktemp('ckpt') / 'tiny.pth'
    save_checkpoint_file(dict(meta=dict(iter=0),
                              state_dict=trainer.state_dict()), str(path))
    return str(path), trainer.model.state_dict()


def test_analysis_tools_read_a_training_checkpoint(tiny_checkpoint):
    # pca_hidden and probe_understanding read the model's weights of a
    # trainer's .pth (objective heads left out) through this
    from uno.engine.weights import read_model_weights
    path, state = tiny_checkpoint
    loaded = read_model_weights(path)
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_pca_hidden_writes_a_png(tiny_checkpoint, tmp_path, capsys):
    pca = _tool('pca_hidden')
    path, _ = tiny_checkpoint
    out = tmp_path / 'pca.png'
    pca.main([UNO, path, path, '--names', 'SFT', 'UNO', '--prompts', '2',
              '--timesteps', '0.2', '0.9', '--out', str(out)])
    assert out.read_bytes()[:8] == PNG
    printed = capsys.readouterr().out
    assert 'SFT' in printed and 'UNO' in printed
    # the same checkpoint twice: identical rows, the default layer is the
    # tiny model's middle one
    res = pca.run(Config.fromfile(UNO), [path, path], ['a', 'b'], [0.5], 1,
                  None, 0, str(tmp_path / 'again.png'))
    assert res['layer'] == 1
    assert res['share']['a'] == pytest.approx(res['share']['b'])
    assert 0 < res['ratio'][0.5] <= 1


def test_joint_pca_colours_are_shared():
    pca = _tool('pca_hidden')
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4, 4, 8, generator=g)
    images, ratio, shares = pca.joint_pca([a, a.clone()])
    assert images[0].shape == (4, 4, 3)
    assert (images[0] == images[1]).all()
    assert 0 <= images[0].min() and images[0].max() <= 1
    assert shares[0] == pytest.approx(ratio)
