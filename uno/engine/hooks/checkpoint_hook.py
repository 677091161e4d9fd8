"""Periodic checkpoints whose rotation never loses the last good one.

Saved atomically, then ``last_checkpoint``, and only then old ones
removed (mmengine's hook removes first): ``docs/checkpoints.md``.
"""
import os.path as osp
import time
from typing import List, Optional

import mmengine
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapper
from mmengine.runner.checkpoint import weights_to_cpu
from mmengine.utils import apply_to, get_git_hash

from uno.registry import HOOKS
from uno.errors import UnoConfigError
from ..checkpoint import (remove_checkpoint, remove_stale_temps,
                          save_checkpoint_file, write_last_checkpoint)
from ..fsdp import UnoFSDP
from ..sharded_checkpoint import save_sharded

KEEP_KEY = 'keep_ckpt_ids'


def _to_cpu(obj):
    return apply_to(obj, lambda x: hasattr(x, 'cpu'), lambda x: x.cpu())


def save_runner_checkpoint(runner, path: str, save_optimizer: bool = True,
                           save_param_scheduler: bool = True,
                           meta: Optional[dict] = None,
                           by_epoch: bool = False) -> None:
    """Save what mmengine's ``Runner.save_checkpoint`` saves to ``path``
    atomically: one inert ``.pth`` written by rank 0, or under
    :class:`UnoFSDP` a sharded checkpoint folder written by every rank.
    Hooks see the checkpoint in ``before_save_checkpoint`` first.
    """
    meta = dict(meta or {})
    meta.setdefault('epoch', runner.epoch + 1 if by_epoch else runner.epoch)
    meta.setdefault('iter', runner.iter if by_epoch else runner.iter + 1)
    meta.update(
        cfg=runner.cfg.pretty_text, seed=runner.seed,
        experiment_name=runner.experiment_name,
        time=time.strftime('%Y%m%d_%H%M%S', time.localtime()),
        mmengine_version=mmengine.__version__ + get_git_hash())
    dataset = getattr(runner.train_dataloader, 'dataset', None)
    if hasattr(dataset, 'metainfo'):
        meta.update(dataset_meta=dataset.metainfo)
    checkpoint = dict(meta=meta,
                      message_hub=_to_cpu(runner.message_hub.state_dict()))
    schedulers = runner.param_schedulers
    if save_param_scheduler and isinstance(schedulers, dict):
        checkpoint['param_schedulers'] = {
            k: [s.state_dict() for s in v] for k, v in schedulers.items()}
    elif save_param_scheduler and schedulers is not None:
        checkpoint['param_schedulers'] = [s.state_dict() for s in schedulers]
    optim_wrapper = runner.optim_wrapper
    if save_optimizer and not isinstance(optim_wrapper, OptimWrapper):
        raise TypeError('checkpoints support one OptimWrapper, got '
                        f'{optim_wrapper}')
    sharded = isinstance(runner.model, UnoFSDP)
    if not sharded:  # else the shards hold weights and optimizer
        model = runner.model.module if is_model_wrapper(runner.model) \
            else runner.model
        checkpoint['state_dict'] = weights_to_cpu(model.state_dict())
        if save_optimizer:
            checkpoint['optimizer'] = _to_cpu(optim_wrapper.state_dict())
    runner.call_hook('before_save_checkpoint', checkpoint=checkpoint)
    if sharded:
        runner.model.release()  # after validation: back to the shards
        save_sharded(path, runner.model.module,
                     optim_wrapper.optimizer if save_optimizer else None,
                     checkpoint)
    elif is_main_process():
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
        if not self.by_epoch:
            step = runner.iter + 1
            self._save(runner, step, self.is_last_train_iter(runner),
                       dict(epoch=runner.epoch, iter=step))

    def after_train_epoch(self, runner) -> None:
        if self.by_epoch:
            step = runner.epoch + 1
            self._save(runner, step, self.is_last_train_epoch(runner),
                       dict(epoch=step, iter=runner.iter))

    def _save(self, runner, step: int, last: bool, meta: dict) -> None:
        """Save step ``step`` if it is due, then rotate."""
        due = self.interval > 0 and step % self.interval == 0
        if not (due or self.save_last and last) or (
                self.keep and self.keep[-1] == step):
            return  # not due, or saved already (the last step is too)
        path = osp.join(runner.work_dir, self.filename_tmpl.format(step))
        keep = self.keep + [step]
        drop = keep[:-self.max_keep_ckpts] if self.max_keep_ckpts > 0 else []
        keep = keep[len(drop):]
        # what the checkpoint records is the state after this save
        runner.message_hub.update_info(KEEP_KEY, keep)
        runner.message_hub.update_info('last_ckpt', path)
        save_runner_checkpoint(
            runner, path, save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler, meta=meta,
            by_epoch=self.by_epoch)
        self.keep = keep
        if is_main_process():
            write_last_checkpoint(runner.work_dir, path)
            for old in drop:  # only now that the new one is complete
                remove_checkpoint(osp.join(runner.work_dir,
                                           self.filename_tmpl.format(old)))
