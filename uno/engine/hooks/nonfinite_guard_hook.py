"""Stop a run cleanly after too many non-finite losses in a row
(docs/distributed.md#the-non-finite-guard)."""
import os.path as osp

from mmengine.hooks import Hook

from uno.registry import HOOKS
from uno.errors import TrainingStopped
from .checkpoint_hook import save_runner_checkpoint


@HOOKS.register_module()
class NonFiniteGuardHook(Hook):
    """Save the last good weights and stop with one line after
    ``max_consecutive`` steps in a row that ``UnoTrainer`` skipped.

    Args:
        max_consecutive (int): Non-finite steps in a row that stop the
            run. Defaults to 5.
    """
    priority = 'VERY_LOW'  # after the logger has recorded the iteration

    def __init__(self, max_consecutive: int = 5):
        if max_consecutive < 1:
            raise ValueError('max_consecutive must be >= 1')
        self.max_consecutive = max_consecutive

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        if not outputs or 'guard/streak' not in outputs:
            return
        streak = int(outputs['guard/streak'])
        if streak < self.max_consecutive:
            return
        name = f'nonfinite_stop_iter_{runner.iter + 1}.pth'
        # by_epoch=True records the iteration reached (meta.iter), not the
        # next one: the streak's steps were skipped
        save_runner_checkpoint(runner, osp.join(runner.work_dir, name),
                               by_epoch=True)
        raise TrainingStopped(
            f'{streak} non-finite losses in a row at iteration '
            f'{runner.iter + 1} ({int(outputs["guard/skipped"])} skipped in '
            f'all); the last good weights are in '
            f'{runner.work_dir}/{name}. Lower the learning rate or check '
            'the data, then resume from it.')
