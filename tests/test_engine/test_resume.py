"""Exact resume: SIGKILL at a random iteration, resume, same weights.

A run killed with SIGKILL and resumed with ``--resume`` must end with
weights bit-identical to an uninterrupted run (model, optimizer, scheduler,
noise, data order) and keep one MLflow run with continuous steps.
"""
import os
import random
import re
import signal
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO

CONFIG = 'configs/uno/uno_mot-tiny_1xb8-iter200_shapes.py'
ITERS = 12
pytestmark = pytest.mark.slow


def _cmd(work_dir, *extra):
    return [
        sys.executable, 'tools/train.py', CONFIG, '--work-dir',
        str(work_dir), '--cfg-options', f'train_cfg.max_iters={ITERS}',
        'train_cfg.val_interval=1000', 'default_hooks.checkpoint.interval=2',
        'default_hooks.logger.interval=1', 'log_processor.window_size=1',
        'train_dataloader.batch_size=4', *extra
    ]


def _env(tmp_path):
    return dict(os.environ, PYTHONUNBUFFERED='1',
                MLFLOW_TRACKING_URI=f'sqlite:///{tmp_path}/mlflow.db')


def _weights(path):
    return torch.load(path, map_location='cpu',
                      weights_only=False)['state_dict']


def test_sigkill_then_resume_is_bit_identical(tmp_path):
    env = _env(tmp_path)
    ref_dir, run_dir = tmp_path / 'work_dirs/ref', tmp_path / 'work_dirs/run'
    ref = subprocess.run(_cmd(ref_dir), cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-3000:]

    kill_at = random.Random(os.getpid()).randint(5, 9)
    proc = subprocess.Popen(_cmd(run_dir), cwd=REPO, env=env,
                            stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    killed_after = None
    for line in proc.stdout:
        m = re.search(r'Iter\(train\) \[\s*(\d+)/', line)
        if m and int(m.group(1)) >= kill_at:
            proc.send_signal(signal.SIGKILL)
            killed_after = int(m.group(1))
            break
    proc.wait(timeout=120)
    assert killed_after is not None and proc.returncode == -signal.SIGKILL
    assert not (run_dir / f'iter_{ITERS}.pth').exists()

    resumed = subprocess.run(_cmd(run_dir, '--resume'), cwd=REPO,
                             env=env, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = _weights(ref_dir / f'iter_{ITERS}.pth')
    b = _weights(run_dir / f'iter_{ITERS}.pth')
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key

    import mlflow
    client = mlflow.MlflowClient(env['MLFLOW_TRACKING_URI'])
    exp = client.get_experiment_by_name('uno')
    run_ids = {r.info.run_id for r in client.search_runs(
        [exp.experiment_id])}
    assert len(run_ids) == 2  # the reference and the interrupted+resumed
    with open(run_dir / 'mlflow_run_id.txt') as f:
        run_id = f.read().strip()
    steps = {m.step for m in client.get_metric_history(run_id, 'loss/flow')}
    assert steps == set(range(1, ITERS + 1))
