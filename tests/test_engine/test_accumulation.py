"""Gradient accumulation is exact: N micro-batches train as their union.

Each objective is normalised by its count summed over the micro-batches
of the step and over ranks, so the accumulated gradient equals the
gradient of one step over the union, even with micro-batches of very
different caption lengths and a caption timestep window (whose count
depends on the timesteps ``prepare`` drew). The 2-rank (DDP and FSDP)
case runs inside test_ddp.py's launch
(``test_two_ranks_accumulate_like_one_step_over_the_union``).
"""
import pytest
import torch

from tests.conftest import baseline_options, mlflow_store
from tests.test_engine.accumulation_checks import (CONFIG, SINGLE, TOL,
                                                   make_batch, make_trainer,
                                                   rel, train_step)
from tests.tools import run_tool, train_rows


def test_accumulated_step_equals_one_step_over_the_union():
    trainer = make_trainer()
    union, union_logs = train_step(trainer, make_batch(sum(SINGLE, [])))
    micro = [make_batch(s) for s in SINGLE]
    accumulated, logs = train_step(trainer, micro, counts=len(micro))
    assert rel(accumulated, union) < TOL
    for key in ('loss', 'loss/flow', 'loss/caption', 'loss/regression'):
        assert float(logs[key]) == pytest.approx(float(union_logs[key]),
                                                 rel=TOL), key
    for key in ('tokens/flow', 'tokens/caption', 'tokens/regression'):
        assert float(logs[key]) == float(union_logs[key]), key
    # the window counted what prepare drew: some captions only
    caption = sum(int(b.ce_labels.numel()) for b in micro)
    assert 0 < float(logs['tokens/caption']) < caption

    # what accumulation by mmengine alone trains (each micro-batch
    # normalised by its own counts, then 1 / N) is far off
    each = [train_step(trainer, b)[0] for b in micro]
    assert rel(sum(each) / len(each), union) > 1e-2


def test_micro_batches_need_the_accumulating_loop():
    trainer = make_trainer()
    with pytest.raises(RuntimeError, match='AccumulatingTrainLoop'):
        train_step(trainer, make_batch([0, 1]), counts=2)


@pytest.mark.slow
def test_train_with_accumulation_equals_the_double_batch_and_resumes(
        tmp_path, baseline_run):
    """tools/train.py: 2 x batch 2 accumulated trains like batch 4 (same
    losses, counts, schedule, noise and data order per iteration; the
    batch-4 run is the session's ``baseline_run``), and resuming mid-run
    (at iteration 1) ends bit-identical."""
    env = dict(MLFLOW_TRACKING_URI=mlflow_store(tmp_path / 'mlflow.db'))

    def train(name, *args):
        work = tmp_path / name
        code, _, err = run_tool('train', [
            CONFIG, '--work-dir', str(work), *args,
            *baseline_options(3, 2, 1),
            'optim_wrapper.accumulative_counts=2'], env=env)
        assert code == 0, err[-3000:]
        return work

    accumulated, double = train('accumulated'), baseline_run
    a, b = train_rows(accumulated), train_rows(double)
    assert sorted(a) == [1, 2, 3], sorted(a)
    assert set(a) <= set(b), (sorted(a), sorted(b))
    for step in a:
        for key in ('loss', 'loss/flow', 'loss/caption', 'tokens/caption',
                    'tokens/flow', 'lr'):
            assert a[step][key] == pytest.approx(b[step][key], rel=1e-5), \
                (step, key)
    wa = _weights(accumulated / 'iter_3.pth')
    for key, value in _weights(double / 'iter_3.pth').items():
        torch.testing.assert_close(wa[key], value, rtol=1e-4, atol=1e-6)

    resumed = train('resumed', '--resume', str(accumulated / 'iter_1.pth'))
    wr = _weights(resumed / 'iter_3.pth')
    assert all(torch.equal(wr[key], value) for key, value in wa.items())


def _weights(path) -> dict:
    return torch.load(path, weights_only=False)['state_dict']
