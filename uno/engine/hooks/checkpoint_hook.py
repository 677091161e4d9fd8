"""Periodic checkpoints whose rotation never loses the last good one.

mmengine's ``CheckpointHook`` deletes the oldest kept checkpoint *before*
writing the new one and writes ``last_checkpoint`` in place, so with
``max_keep_ckpts=1`` a kill during the save leaves no checkpoint at all.
This hook saves first (atomically, :func:`save_runner_checkpoint`), then
points ``last_checkpoint`` at the new file (atomically), and only
then removes checkpoints beyond ``max_keep_ckpts``. Temporary files of a
killed save are removed when training starts.
"""
import os
import os.path as osp
import shutil
from typing import List, Optional

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapper
from mmengine.runner.checkpoint import weights_to_cpu
from mmengine.utils import apply_to

from uno.registry import HOOKS
from uno.errors import UnoConfigError
from ..checkpoint import (remove_stale_temps, save_checkpoint_file,
                          write_last_checkpoint)
from ..fsdp import UnoFSDP
from ..sharded_checkpoint import checkpoint_extras, save_sharded

KEEP_KEY = 'keep_ckpt_ids'


def save_runner_checkpoint(runner, path: str, save_optimizer: bool = True,
                           save_param_scheduler: bool = True,
                           meta: Optional[dict] = None,
                           by_epoch: bool = False) -> None:
    """Save the runner's training state to ``path`` atomically: one inert
    ``.pth`` written by rank 0 (:func:`save_checkpoint_file`), or under
    :class:`UnoFSDP` a sharded checkpoint folder written by every rank.
    Hooks see the checkpoint in ``before_save_checkpoint`` first.
    """
    checkpoint = checkpoint_extras(runner, meta, by_epoch,
                                   save_param_scheduler)
    optim_wrapper = runner.optim_wrapper
    if save_optimizer and not isinstance(optim_wrapper, OptimWrapper):
        raise TypeError('checkpoints support one OptimWrapper, got '
                        f'{optim_wrapper}')
    if isinstance(runner.model, UnoFSDP):
        runner.call_hook('before_save_checkpoint', checkpoint=checkpoint)
        runner.model.release()  # after validation: back to the shards
        save_sharded(path, runner.model.module,
                     optim_wrapper.optimizer if save_optimizer else None,
                     checkpoint)
        return
    model = runner.model.module if is_model_wrapper(runner.model) \
        else runner.model
    checkpoint['state_dict'] = weights_to_cpu(model.state_dict())
    if save_optimizer:
        checkpoint['optimizer'] = apply_to(
            optim_wrapper.state_dict(), lambda x: hasattr(x, 'cpu'),
            lambda x: x.cpu())
    runner.call_hook('before_save_checkpoint', checkpoint=checkpoint)
    if is_main_process():
        save_checkpoint_file(checkpoint, path)


@HOOKS.register_module()
class UnoCheckpointHook(Hook):
    """Save every ``interval`` iterations (or epochs) and at the end.

    Args:
        interval (int): Steps between checkpoints, >= 1; -1 saves only at
            the end (with ``save_last``). Defaults to -1.
        by_epoch (bool): Count epochs instead of iterations. Defaults to
            False.
        max_keep_ckpts (int): Periodic checkpoints to keep, >= 1; -1 keeps
            all. Defaults to -1.
        save_last (bool): Also save after the last step. Defaults to True.
        save_optimizer (bool): Defaults to True.
        save_param_scheduler (bool): Defaults to True.
        filename_tmpl (str, optional): Defaults to ``iter_{}.pth`` or
            ``epoch_{}.pth``.

    Raises:
        UnoConfigError: ``interval`` or ``max_keep_ckpts`` is 0 or below
            -1 (0 would silently never save / keep nothing).
    """
    priority = 'VERY_LOW'

    def __init__(self,
                 interval: int = -1,
                 by_epoch: bool = False,
                 max_keep_ckpts: int = -1,
                 save_last: bool = True,
                 save_optimizer: bool = True,
                 save_param_scheduler: bool = True,
                 filename_tmpl: Optional[str] = None) -> None:
        for name, value in (('interval', interval),
                            ('max_keep_ckpts', max_keep_ckpts)):
            if isinstance(value, bool) or not isinstance(value, int) or (
                    value < 1 and value != -1):
                raise UnoConfigError(
                    f'default_hooks.checkpoint.{name}={value!r}: must be an '
                    'integer >= 1, or -1 for '
                    + ('"only at the end"' if name == 'interval'
                       else '"keep all"'))
        self.interval = interval
        self.by_epoch = by_epoch
        self.max_keep_ckpts = max_keep_ckpts
        self.save_last = save_last
        self.save_optimizer = save_optimizer
        self.save_param_scheduler = save_param_scheduler
        self.filename_tmpl = filename_tmpl or (
            'epoch_{}.pth' if by_epoch else 'iter_{}.pth')
        self.keep: List[int] = []

    def before_train(self, runner) -> None:
        if is_main_process():
            removed = remove_stale_temps(runner.work_dir)
            if removed:
                runner.logger.warning(
                    f'removed {len(removed)} incomplete file(s) of killed '
                    f'saves from {runner.work_dir}: {", ".join(removed)}')
        info = runner.message_hub.runtime_info
        self.keep = [int(s) for s in info.get(KEEP_KEY, [])]
        runner.logger.info(f'Checkpoints will be saved to {runner.work_dir}.')

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        if self.by_epoch:
            return
        if (self.interval > 0 and self.every_n_train_iters(
                runner, self.interval)) or (
                    self.save_last and self.is_last_train_iter(runner)):
            step = runner.iter + 1
            self._save(runner, step, dict(epoch=runner.epoch, iter=step))

    def after_train_epoch(self, runner) -> None:
        if not self.by_epoch:
            return
        if (self.interval > 0 and self.every_n_epochs(
                runner, self.interval)) or (
                    self.save_last and self.is_last_train_epoch(runner)):
            step = runner.epoch + 1
            self._save(runner, step, dict(epoch=step, iter=runner.iter))

    def _save(self, runner, step: int, meta: dict) -> None:
        if self.keep and self.keep[-1] == step:
            return  # saved already (the last step is also an interval)
        name = self.filename_tmpl.format(step)
        path = osp.join(runner.work_dir, name)
        keep = self.keep + [step]
        drop, kept = [], keep
        if self.max_keep_ckpts > 0 and len(keep) > self.max_keep_ckpts:
            drop, kept = keep[:-self.max_keep_ckpts], \
                keep[-self.max_keep_ckpts:]
        # what the checkpoint records is the state after this save
        runner.message_hub.update_info(KEEP_KEY, kept)
        runner.message_hub.update_info('last_ckpt', path)
        save_runner_checkpoint(
            runner, path, save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler, meta=meta,
            by_epoch=self.by_epoch)
        self.keep = kept
        if not is_main_process():
            return
        write_last_checkpoint(runner.work_dir, path)
        for old in drop:  # only now that the new one is complete
            old_path = osp.join(runner.work_dir,
                                self.filename_tmpl.format(old))
            if osp.isdir(old_path):
                shutil.rmtree(old_path)
            elif osp.exists(old_path):
                os.remove(old_path)
