"""Gradient accumulation checks shared by test_accumulation.py (one
process) and test_ddp.py (two gloo ranks, run inside the DDP launch by
two_rank_probe.py).

Each objective is normalised by its count summed over the micro-batches
of the step and over ranks, so the accumulated gradient equals the
gradient of one step over the union, even with micro-batches of very
different caption lengths and a caption timestep window (whose count
depends on the timesteps ``prepare`` drew).
"""
import os.path as osp

import torch
import torch.distributed as dist
from mmengine.config import Config
from mmengine.optim import OptimWrapper

from tests.conftest import REPO, t2i_sample
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


class Record(torch.optim.Optimizer):
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


def make_trainer() -> UnoTrainer:
    cfg = Config.fromfile(osp.join(REPO, CONFIG))
    objectives = cfg.objectives.to_dict()
    objectives['caption']['timestep_window'] = WINDOW
    torch.manual_seed(0)
    trainer = UnoTrainer(model=cfg.model.to_dict(), objectives=objectives)
    # a trained model has a non-zero velocity head; so do we
    torch.nn.init.normal_(trainer.model.llm2vae.weight, std=0.1)
    return trainer


def make_batch(samples):
    return pack_sequences([
        t2i_sample(seed=i, image_size=32, caption_len=CAPTIONS[i],
                   num_queries=16) for i in samples], latent_stride=4)


def train_step(trainer, data, counts=1, wrapper=None):
    """Flattened gradient and logs of one train_step of the trainer or
    its ``wrapper`` (nothing is updated)."""
    optimizer = Record([p for p in trainer.parameters() if p.requires_grad])
    logs = (wrapper or trainer).train_step(
        data, OptimWrapper(optimizer, accumulative_counts=counts))
    return optimizer.grads, logs


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def rank_checks(folder: str) -> None:
    """On this rank of a 2-rank gloo group: accumulated FSDP (with and
    without ``accumulate_unsharded``) and DDP steps over the rank's
    micro-batches of ``RANKS``, saved to
    ``folder/rank{r}.pt`` (the gradients, the logs and how many gradient
    syncs an accumulated and a plain step made)."""
    rank = dist.get_rank()
    assert dist.get_world_size() == 2, dist.get_world_size()
    micro = [make_batch(s) for s in RANKS[rank]]
    trainer = make_trainer()
    fsdp_grads, _ = train_step(trainer, micro, counts=len(micro),
                               wrapper=UnoFSDP(trainer))
    # the same, reduce-scattering only the last micro-batch's gradients
    trainer = make_trainer()
    unsharded, _ = train_step(trainer, micro, counts=len(micro),
                              wrapper=UnoFSDP(trainer,
                                              accumulate_unsharded=True))
    trainer = make_trainer()
    ddp = UnoDistributedDataParallel(module=trainer)
    syncs = []

    def count_syncs(state, bucket):
        from torch.distributed.algorithms.ddp_comm_hooks import \
            default_hooks
        syncs.append(1)
        return default_hooks.allreduce_hook(None, bucket)

    ddp.register_comm_hook(None, count_syncs)
    train_step(trainer, micro[0], wrapper=ddp)  # DDP settles its buckets
    del syncs[:]
    grads, logs = train_step(trainer, micro, counts=len(micro), wrapper=ddp)
    accumulated_syncs = len(syncs)
    del syncs[:]
    train_step(trainer, micro[0], wrapper=ddp)
    torch.save(dict(grads=grads, logs=logs, syncs=accumulated_syncs,
                    plain_syncs=len(syncs), fsdp_grads=fsdp_grads,
                    fsdp_unsharded_grads=unsharded),
               osp.join(folder, f'rank{rank}.pt'))
