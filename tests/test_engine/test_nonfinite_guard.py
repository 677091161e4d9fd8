"""Non-finite losses: the step is skipped, a streak stops the run."""
import os
from types import SimpleNamespace

import torch
from mmengine.optim import OptimWrapper

from tests.conftest import mlflow_store, t2i_sample
from tests.tools import run_tool
from uno.structures.packing import pack_sequences
from uno.engine import UnoTrainer


def test_nan_step_leaves_parameters_untouched(tiny_model_cfg):
    torch.manual_seed(0)
    trainer = UnoTrainer(
        model=tiny_model_cfg,
        objectives=dict(flow=dict(type='FlowMatchingObjective')))
    wrapper = OptimWrapper(torch.optim.SGD(trainer.parameters(), lr=0.1))
    batch = pack_sequences([t2i_sample()], latent_stride=4)
    before = [p.detach().clone() for p in trainer.parameters()]
    loss = sum(p.sum() for p in trainer.parameters()) * float('nan')
    logs = trainer.guarded_update(wrapper, loss, {'loss': loss.detach()})
    assert logs['guard/streak'] == 1 and 'loss' not in logs
    assert all(torch.equal(a, b) for a, b in zip(before,
                                                 trainer.parameters()))
    logs = trainer.train_step(batch, wrapper)  # a finite step updates
    assert logs['guard/streak'] == 0 and logs['guard/skipped'] == 1
    assert not all(torch.equal(a, b) for a, b in zip(before,
                                                     trainer.parameters()))


def test_streak_stops_with_checkpoint_and_one_line(
        tmp_path, monkeypatch, capsys):
    work = tmp_path / 'work_dirs' / 'nan'
    monkeypatch.setenv('MLFLOW_TRACKING_URI', mlflow_store(tmp_path / 'm.db'))
    code, _, err = run_tool('train', [
        'configs/smoke/flow_mot-tiny_1xb8-iter200_shapes-t2i.py',
        '--work-dir', str(work), '--cfg-options',
        'optim_wrapper.optimizer.lr=1e30', 'optim_wrapper.clip_grad=None',
        'train_cfg.max_iters=30', 'train_dataloader.batch_size=2',
        'default_hooks.nonfinite_guard.max_consecutive=3'
    ], monkeypatch, capsys)
    res = SimpleNamespace(returncode=code, stderr=err)
    assert res.returncode == 3, res.stderr[-2000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith('stopped: 3 non-finite losses in a row')
    ckpts = [f for f in os.listdir(work) if f.startswith('nonfinite_stop')]
    assert len(ckpts) == 1
    state = torch.load(work / ckpts[0], weights_only=False)['state_dict']
    assert all(torch.isfinite(v).all() for v in state.values())
