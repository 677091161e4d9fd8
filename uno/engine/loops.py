"""Gradient accumulation: one iteration is one optimizer step over N batches
(docs/distributed.md#gradient-accumulation)."""
from mmengine.logging import print_log
from mmengine.runner import IterBasedTrainLoop

from uno.registry import LOOPS


class _Groups:
    """Lists of ``n`` consecutive items of an endless iterator."""

    def __init__(self, iterator, n: int):
        self.iterator, self.n = iterator, n

    def __iter__(self) -> '_Groups':
        return self

    def __next__(self) -> list:
        return [next(self.iterator) for _ in range(self.n)]


@LOOPS.register_module()
class AccumulatingTrainLoop(IterBasedTrainLoop):
    """``IterBasedTrainLoop`` whose iteration is one step over N batches,
    handed to ``train_step`` as one list; iterations, intervals and
    ``by_epoch=False`` schedulers count optimizer steps.

    ``IterBasedTrainLoop``'s arguments are spelled out so the config check
    names a misspelt one.

    Args:
        accumulative_counts (int): N; ``build_runner`` sets it from
            ``optim_wrapper.accumulative_counts``. Defaults to 1.
    """

    def __init__(self, runner, dataloader, max_iters: int,
                 val_begin: int = 1, val_interval: int = 1000,
                 dynamic_intervals=None, accumulative_counts: int = 1):
        super().__init__(runner, dataloader, max_iters, val_begin,
                         val_interval, dynamic_intervals)
        self.accumulative_counts = int(accumulative_counts)

    def run(self):
        n = self.accumulative_counts
        if n > 1:
            self.dataloader_iterator = _Groups(self.dataloader_iterator, n)
            # mmengine's counter (which decides the DDP / FSDP gradient
            # sync) counts micro-batches
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
