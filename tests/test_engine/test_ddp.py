"""DDP on CPU (gloo): 2 processes x batch B train like 1 process x 2B.

Global token counts normalise every loss and each image's noise is
seeded by its sample, so the split across ranks changes nothing but
floating-point summation order.
"""
import os
import subprocess

import pytest
import torch

from tests.conftest import REPO, mlflow_store
from tests.tools import free_port, run_tool, train_rows

CONFIG = 'configs/uno/uno_mot-tiny_1xb8-iter200_shapes.py'
ITERS = 3
pytestmark = [pytest.mark.dist, pytest.mark.slow]


def _options(batch):
    return [
        '--cfg-options', f'train_cfg.max_iters={ITERS}',
        'train_cfg.val_interval=1000', 'default_hooks.logger.interval=1',
        'log_processor.window_size=1', f'train_dataloader.batch_size={batch}',
        f'default_hooks.checkpoint.interval={ITERS}'
    ]


def test_two_processes_match_one_with_double_batch(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS='1',
               MLFLOW_TRACKING_URI=mlflow_store(tmp_path / 'mlflow.db'))
    one, two = tmp_path / 'work_dirs/one', tmp_path / 'work_dirs/two'
    code, _, err = run_tool(  # the reference, in-process
        'train', [CONFIG, '--work-dir', str(one), *_options(4)],
        env=dict(MLFLOW_TRACKING_URI=env['MLFLOW_TRACKING_URI']))
    assert code == 0, err[-3000:]
    dist = subprocess.run(
        ['bash', 'tools/dist_train.sh', CONFIG, '2', '--work-dir', str(two),
         *_options(2)], cwd=REPO, env=dict(env, PORT=str(free_port())),
        capture_output=True, text=True, timeout=600)
    assert dist.returncode == 0, (dist.stdout + dist.stderr)[-4000:]

    a, b = train_rows(one), train_rows(two)
    assert sorted(a) == sorted(b) == list(range(1, ITERS + 1))
    for step in a:
        for key in ('loss', 'loss/flow', 'loss/caption', 'loss/regression',
                    'tokens/flow', 'tokens/caption'):
            assert a[step][key] == pytest.approx(b[step][key], rel=1e-4), \
                (step, key)
    wa = torch.load(one / f'iter_{ITERS}.pth', weights_only=False)
    wb = torch.load(two / f'iter_{ITERS}.pth', weights_only=False)
    for key, value in wa['state_dict'].items():
        torch.testing.assert_close(value, wb['state_dict'][key], rtol=1e-3,
                                   atol=1e-5)
