"""DDP on CPU (gloo): 2 processes x batch B train like 1 process x 2B.

Global token counts normalise every loss and each image's noise is
seeded by its sample, so the split across ranks changes nothing but
floating-point summation order.

One ``tools/dist_train.sh`` launch serves both tests: before training,
its two ranks also run the 2-rank accumulation checks (DDP and FSDP,
:mod:`tests.test_engine.two_rank_probe`, which leaves the run's random
state as it found it), so they need no processes of their own.
"""
import os
import subprocess
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config

from tests.conftest import BASELINE as CONFIG
from tests.conftest import REPO, baseline_options
from tests.test_engine.accumulation_checks import (RANKS, TOL, make_batch,
                                                   make_trainer, rel,
                                                   train_step)
from tests.tools import free_port, train_rows

ITERS = 3
pytestmark = pytest.mark.dist


@pytest.fixture(scope='module')
def launch(tmp_path_factory, baseline_run):
    """The 2-rank launch (batch 2 per rank, with the accumulation probe)
    and the one-process batch-4 run (the session's ``baseline_run``)."""
    tmp = tmp_path_factory.mktemp('ddp')
    two, probe = tmp / 'work_dirs/two', tmp / 'probe'
    # the baseline plus the probe hook (the base's hooks kept), logging to
    # the local JSON only: this is about DDP (test_fsdp.py's 2-rank
    # launches cover MLflow under torchrun)
    base = Config.fromfile(os.path.join(REPO, CONFIG)).to_dict()
    hooks = base.get('custom_hooks', []) + [
        dict(type='TwoRankAccumulationProbe', out_dir=str(probe))]
    config = tmp / 'ddp_probe.py'
    config.write_text(
        f"_base_ = [{os.path.join(REPO, CONFIG)!r}]\n"
        "custom_imports = dict(imports=["
        "'tests.test_engine.two_rank_probe'])\n"
        f"custom_hooks = {hooks!r}\n"
        "visualizer = dict(vis_backends=[dict(type='LocalVisBackend')])\n")
    env = dict(os.environ, OMP_NUM_THREADS='1', PORT=str(free_port()))
    dist = subprocess.run(
        ['bash', 'tools/dist_train.sh', str(config), '2', '--work-dir',
         str(two), *baseline_options(ITERS, 2, ITERS)], cwd=REPO, env=env,
        capture_output=True, text=True, timeout=600)
    return SimpleNamespace(one=baseline_run, two=two, probe=probe, dist=dist)


@pytest.mark.slow
def test_two_processes_match_one_with_double_batch(launch):
    dist = launch.dist
    assert dist.returncode == 0, (dist.stdout + dist.stderr)[-4000:]
    a, b = train_rows(launch.one), train_rows(launch.two)
    assert sorted(b) == list(range(1, ITERS + 1)), sorted(b)
    assert set(b) <= set(a), (sorted(a), sorted(b))
    for step in b:
        for key in ('loss', 'loss/flow', 'loss/caption', 'loss/regression',
                    'tokens/flow', 'tokens/caption'):
            assert a[step][key] == pytest.approx(b[step][key], rel=1e-4), \
                (step, key)
    wa = torch.load(launch.one / f'iter_{ITERS}.pth', weights_only=False)
    wb = torch.load(launch.two / f'iter_{ITERS}.pth', weights_only=False)
    for key, value in wa['state_dict'].items():
        torch.testing.assert_close(value, wb['state_dict'][key], rtol=1e-3,
                                   atol=1e-5)


def test_two_ranks_accumulate_like_one_step_over_the_union(launch):
    """DDP and FSDP, 2 gloo ranks x 2 micro-batches of other sizes
    (:func:`tests.test_engine.accumulation_checks.rank_checks`, run by
    the launch's ranks), against one step over the union here."""
    dist = launch.dist
    assert dist.returncode == 0, (dist.stdout + dist.stderr)[-4000:]
    out = [torch.load(launch.probe / f'rank{r}.pt', weights_only=True)
           for r in range(2)]
    trainer = make_trainer()
    everything = sum((s for r in RANKS for s in r), [])
    union, union_logs = train_step(trainer, make_batch(everything))
    for rank in out:
        assert rel(rank['grads'], union) < TOL
        assert rel(rank['fsdp_grads'], union) < TOL
        assert rel(rank['fsdp_unsharded_grads'], union) < TOL
        for key in ('loss', 'loss/caption', 'tokens/caption'):
            assert float(rank['logs'][key]) == pytest.approx(
                float(union_logs[key]), rel=TOL), key
        # no gradient sync on the first micro-batch's backward (no_sync)
        assert rank['syncs'] == rank['plain_syncs'] > 0
