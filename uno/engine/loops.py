"""Gradient accumulation: one iteration is one optimizer step over N batches.

With ``optim_wrapper.accumulative_counts = N`` (N > 1), ``build_runner``
runs an ``IterBasedTrainLoop`` as :class:`AccumulatingTrainLoop`. Each
iteration reads N batches and hands them to ``train_step`` as one list,
which normalises every micro-batch by the counts of all N (summed over
ranks), so a step equals one step over their union: N x B accumulated
trains like a batch of N*B, noise included (it is seeded by iteration and
sample).

Everything that counts iterations counts optimizer steps:
``train_cfg.max_iters``, ``val_interval``, the checkpoint and logger
intervals, and ``by_epoch=False`` parameter schedulers (one scheduler
step per optimizer step). This differs from mmengine's own accumulation,
where an iteration is a micro-batch. Checkpoints fall between steps, and a
resumed run skips ``iter x N`` batches, so resuming stays exact.
"""
from typing import Iterator, List

from mmengine.logging import print_log
from mmengine.runner import IterBasedTrainLoop

from uno.registry import LOOPS


class _Groups:
    """Lists of ``n`` consecutive items of an endless iterator."""

    def __init__(self, iterator: Iterator, n: int):
        self.iterator, self.n = iterator, n

    def __iter__(self) -> '_Groups':
        return self

    def __next__(self) -> List:
        return [next(self.iterator) for _ in range(self.n)]


@LOOPS.register_module()
class AccumulatingTrainLoop(IterBasedTrainLoop):
    """``IterBasedTrainLoop`` whose iteration is an accumulated step.

    Takes ``IterBasedTrainLoop``'s arguments (spelled out, so the config
    check names a misspelt one) and:

    Args:
        accumulative_counts (int): N, batches per optimizer step; set by
            ``build_runner`` from ``optim_wrapper.accumulative_counts``
            (N = 1 runs as the plain loop). Defaults to 1.
    """

    def __init__(self, runner, dataloader, max_iters: int,
                 val_begin: int = 1, val_interval: int = 1000,
                 dynamic_intervals=None, accumulative_counts: int = 1):
        super().__init__(runner, dataloader, max_iters, val_begin,
                         val_interval, dynamic_intervals)
        self.accumulative_counts = int(accumulative_counts)

    def run(self):
        """Group the batches by N, then run mmengine's loop."""
        n = self.accumulative_counts
        if n > 1:
            self.dataloader_iterator = _Groups(self.dataloader_iterator, n)
            # mmengine's counter (which decides the DDP / FSDP gradient
            # sync) counts micro-batches: N per iteration
            self.runner.optim_wrapper.initialize_count_status(
                self.runner.model, self.iter * n, self.max_iters * n)
            if self.iter % n:
                print_log(
                    'AccumulatingTrainLoop: an iteration is a whole step of '
                    f'{n} micro-batches, so resuming at iteration '
                    f'{self.iter} loses no gradient (mmengine\'s warning '
                    'above takes an iteration for a micro-batch)',
                    logger='current')
        return super().run()
