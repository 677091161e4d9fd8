"""Count the broken samples the data pipeline skipped, and report them
(docs/engine.md#hooks)."""
import logging
from typing import Optional

import torch
from mmengine.dist import all_reduce
from mmengine.hooks import Hook
from mmengine.logging import print_log

from uno.registry import HOOKS

#: Key of the hook's counters in a checkpoint.
CHECKPOINT_KEY = 'broken_samples'


def _counts(data_batch) -> tuple:
    """``(broken, read)`` of a PackedBatch (bare or under ``'batch'``), or
    summed over a list of them (an accumulated step), else ``(0, 0)``."""
    if isinstance(data_batch, list):
        parts = [_counts(d) for d in data_batch]
        return sum(p[0] for p in parts), sum(p[1] for p in parts)
    if isinstance(data_batch, dict) and 'batch' in data_batch:
        data_batch = data_batch['batch']
    return (int(getattr(data_batch, 'broken', 0)),
            int(getattr(data_batch, 'read', 0)))


@HOOKS.register_module()
class BrokenSampleHook(Hook):
    """Log the running count of ``batch.broken`` as ``train/<log_key>``,
    keep it in checkpoints (a resumed run continues it) and sum it over
    ranks at the end. Needs ``collate_fn=dict(type='pack_and_count')``.

    Args:
        max_broken_fraction (float, optional): Stop with a RuntimeError
            once more than this fraction of the samples this rank read were
            broken. Defaults to None (the datasets' own threshold).
        min_samples (int): Samples read before ``max_broken_fraction`` is
            checked. Defaults to 50.
        log_key (str): Name of the logged running count. Defaults to
            ``'data/broken'``.
    """
    priority = 'NORMAL'

    def __init__(self,
                 max_broken_fraction: Optional[float] = None,
                 min_samples: int = 50,
                 log_key: str = 'data/broken'):
        if max_broken_fraction is not None and not (
                0 <= max_broken_fraction <= 1):
            raise ValueError('max_broken_fraction must be in [0, 1], got '
                             f'{max_broken_fraction}')
        self.max_broken_fraction = max_broken_fraction
        self.min_samples = min_samples
        self.log_key = log_key
        self.broken = 0  # on this rank, since the start of training
        self.read = 0
        self._loaded = None  # counters of a loaded checkpoint

    def before_train(self, runner) -> None:
        # a resumed run (iter > 0) continues the counts, load_from does not
        if self._loaded is not None and runner.iter > 0:
            self.broken = int(self._loaded.get('broken', 0))
            self.read = int(self._loaded.get('read', 0))
        self._loaded = None

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        broken, read = _counts(data_batch)
        self.broken += broken
        self.read += read
        runner.message_hub.update_scalar(f'train/{self.log_key}',
                                         self.broken)
        if (broken and self.max_broken_fraction is not None
                and self.read >= self.min_samples
                and self.broken / self.read > self.max_broken_fraction):
            raise RuntimeError(
                f'{self.broken} of {self.read} samples were broken '
                f'({100 * self.broken / self.read:.1f}%), above '
                f'max_broken_fraction={self.max_broken_fraction} of '
                f'{type(self).__name__}; check the dataset paths (the '
                'warnings above name the files and reasons)')

    def after_train(self, runner) -> None:
        # mmengine's all_reduce moves the tensor to the backend's device
        counts = torch.tensor([self.broken, self.read], dtype=torch.float64)
        all_reduce(counts, op='sum')
        broken, read = (int(v) for v in counts.tolist())
        fraction = f' ({100 * broken / read:.2f}%)' if read else ''
        print_log(
            f'{type(self).__name__}: skipped {broken} broken samples of '
            f'{read} read{fraction} during training',
            logger='current',
            level=logging.WARNING if broken else logging.INFO)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_KEY] = dict(broken=self.broken, read=self.read)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get(CHECKPOINT_KEY)
        self._loaded = state if isinstance(state, dict) else None
