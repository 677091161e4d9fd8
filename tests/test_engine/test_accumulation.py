"""Gradient accumulation is exact: N micro-batches train as their union.

Each objective is normalised by its count summed over the micro-batches
of the step and over ranks, so the accumulated gradient equals the
gradient of one step over the union, even with micro-batches of very
different caption lengths and a caption timestep window (whose count
depends on the timesteps ``prepare`` drew).
"""
import os.path as osp

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from mmengine.config import Config
from mmengine.optim import OptimWrapper

from tests.conftest import REPO, mlflow_store, t2i_sample
from tests.tools import run_tool, train_rows
from uno.engine import UnoDistributedDataParallel, UnoTrainer
from uno.engine.fsdp import UnoFSDP
from uno.structures.packing import pack_sequences

CONFIG = 'configs/uno/uno_mot-tiny_1xb8-iter200_shapes.py'
# caption lengths of the samples; micro-batches: long captions, short ones
CAPTIONS = (40, 35, 2, 1, 30, 3)
SINGLE = [[0, 1], [2, 3]]  # one process: two micro-batches
RANKS = [[[0, 1], [2]], [[3], [4, 5]]]  # two ranks x two micro-batches
# with the drawn timesteps, some captions are in the window, some are not
WINDOW = (0.0, 0.7)
TOL = 1e-6


class _Record(torch.optim.Optimizer):
    """An optimizer whose step records the flattened gradient."""

    def __init__(self, params):
        super().__init__(params, {})
        self.grads = None

    def step(self, closure=None):
        grads = [p.grad if p.grad is not None else torch.zeros_like(p)
                 for group in self.param_groups for p in group['params']]
        self.grads = torch.cat([  # FSDP's are shards: gather them
            (g.full_tensor() if hasattr(g, 'full_tensor') else g).flatten()
            for g in grads])


def _trainer() -> UnoTrainer:
    cfg = Config.fromfile(osp.join(REPO, CONFIG))
    objectives = cfg.objectives.to_dict()
    objectives['caption']['timestep_window'] = WINDOW
    torch.manual_seed(0)
    trainer = UnoTrainer(model=cfg.model.to_dict(), objectives=objectives)
    # a trained model has a non-zero velocity head; so do we
    torch.nn.init.normal_(trainer.model.llm2vae.weight, std=0.1)
    return trainer


def _batch(samples):
    return pack_sequences([
        t2i_sample(seed=i, image_size=32, caption_len=CAPTIONS[i],
                   num_queries=16) for i in samples], latent_stride=4)


def _step(trainer, data, counts=1, wrapper=None):
    """Flattened gradient and logs of one train_step of the trainer or
    its ``wrapper`` (nothing is updated)."""
    optimizer = _Record([p for p in trainer.parameters() if p.requires_grad])
    logs = (wrapper or trainer).train_step(
        data, OptimWrapper(optimizer, accumulative_counts=counts))
    return optimizer.grads, logs


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def test_accumulated_step_equals_one_step_over_the_union():
    trainer = _trainer()
    union, union_logs = _step(trainer, _batch(sum(SINGLE, [])))
    micro = [_batch(s) for s in SINGLE]
    accumulated, logs = _step(trainer, micro, counts=len(micro))
    assert _rel(accumulated, union) < TOL
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
    each = [_step(trainer, b)[0] for b in micro]
    assert _rel(sum(each) / len(each), union) > 1e-2


def test_micro_batches_need_the_accumulating_loop():
    trainer = _trainer()
    with pytest.raises(RuntimeError, match='AccumulatingTrainLoop'):
        _step(trainer, _batch([0, 1]), counts=2)


def _rank(rank: int, folder: str) -> None:
    """One of two gloo ranks: accumulated DDP and FSDP steps."""
    torch.set_num_threads(1)  # two ranks share the worker's cores
    dist.init_process_group('gloo', init_method=f'file://{folder}/pg',
                            rank=rank, world_size=2)
    try:
        micro = [_batch(s) for s in RANKS[rank]]
        trainer = _trainer()
        fsdp_grads, _ = _step(trainer, micro, counts=len(micro),
                              wrapper=UnoFSDP(trainer))
        trainer = _trainer()
        ddp = UnoDistributedDataParallel(module=trainer)
        syncs = []

        def count_syncs(state, bucket):
            from torch.distributed.algorithms.ddp_comm_hooks import \
                default_hooks
            syncs.append(1)
            return default_hooks.allreduce_hook(None, bucket)

        ddp.register_comm_hook(None, count_syncs)
        _step(trainer, micro[0], wrapper=ddp)  # DDP settles its buckets
        del syncs[:]
        grads, logs = _step(trainer, micro, counts=len(micro), wrapper=ddp)
        accumulated_syncs = len(syncs)
        del syncs[:]
        _step(trainer, micro[0], wrapper=ddp)
        torch.save(dict(grads=grads, logs=logs, syncs=accumulated_syncs,
                        plain_syncs=len(syncs), fsdp_grads=fsdp_grads),
                   f'{folder}/rank{rank}.pt')
    finally:
        dist.destroy_process_group()


@pytest.mark.dist
def test_two_ranks_accumulate_like_one_step_over_the_union(tmp_path):
    """DDP and FSDP, 2 gloo ranks x 2 micro-batches of other sizes.

    The ranks are spawned, not forked: autograd's threads do not survive
    a fork once any earlier test in this process has run a backward."""
    mp.start_processes(_rank, args=(str(tmp_path), ), nprocs=2, join=True,
                       start_method='spawn')
    out = [torch.load(tmp_path / f'rank{r}.pt', weights_only=True)
           for r in range(2)]
    trainer = _trainer()
    everything = sum((s for r in RANKS for s in r), [])
    union, union_logs = _step(trainer, _batch(everything))
    for rank in out:
        assert _rel(rank['grads'], union) < TOL
        assert _rel(rank['fsdp_grads'], union) < TOL
        for key in ('loss', 'loss/caption', 'tokens/caption'):
            assert float(rank['logs'][key]) == pytest.approx(
                float(union_logs[key]), rel=TOL), key
        # no gradient sync on the first micro-batch's backward (no_sync)
        assert rank['syncs'] == rank['plain_syncs'] > 0


@pytest.mark.slow
def test_train_with_accumulation_equals_the_double_batch_and_resumes(
        tmp_path):
    """tools/train.py: 2 x batch 2 accumulated trains like batch 4 (same
    losses, counts, schedule, noise and data order per iteration), and
    resuming mid-run (at iteration 1) ends bit-identical."""
    env = dict(MLFLOW_TRACKING_URI=mlflow_store(tmp_path / 'mlflow.db'))

    def train(name, batch, *args):
        work = tmp_path / name
        code, _, err = run_tool('train', [
            CONFIG, '--work-dir', str(work), *args, '--cfg-options',
            'train_cfg.max_iters=3', 'train_cfg.val_interval=1000',
            'default_hooks.logger.interval=1', 'log_processor.window_size=1',
            'default_hooks.checkpoint.interval=1',
            f'train_dataloader.batch_size={batch}'] + (
                ['optim_wrapper.accumulative_counts=2'] if batch == 2 else
                []), env=env)
        assert code == 0, err[-3000:]
        return work

    accumulated, double = train('accumulated', 2), train('double', 4)
    a, b = train_rows(accumulated), train_rows(double)
    assert sorted(a) == sorted(b) == [1, 2, 3]
    for step in a:
        for key in ('loss', 'loss/flow', 'loss/caption', 'tokens/caption',
                    'tokens/flow', 'lr'):
            assert a[step][key] == pytest.approx(b[step][key], rel=1e-5), \
                (step, key)
    wa = _weights(accumulated / 'iter_3.pth')
    for key, value in _weights(double / 'iter_3.pth').items():
        torch.testing.assert_close(wa[key], value, rtol=1e-4, atol=1e-6)

    resumed = train('resumed', 2, '--resume',
                    str(accumulated / 'iter_1.pth'))
    wr = _weights(resumed / 'iter_3.pth')
    assert all(torch.equal(wr[key], value) for key, value in wa.items())


def _weights(path) -> dict:
    return torch.load(path, weights_only=False)['state_dict']
