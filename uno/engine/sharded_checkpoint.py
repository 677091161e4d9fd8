"""Sharded checkpoints (``torch.distributed.checkpoint``) of FSDP runs.

A sharded checkpoint is a *folder* with the name mmengine's CheckpointHook
gives a checkpoint file (``iter_2000.pth/``), so the hook's bookkeeping
(``last_checkpoint``, ``max_keep_ckpts``, which removes folders too) and
``--resume`` work unchanged. Inside:

* ``.metadata`` and ``__<rank>_0.distcp``: one file per rank, written in
  parallel by DCP, holding ``model`` (the trainer's state dict, names as
  in a ``.pth``: ``model.decoder.layers.0...``) and ``optimizer`` (state
  keyed by parameter name, so it reloads on any number of ranks);
* ``meta.pth``: what mmengine keeps besides the weights (``meta``,
  ``message_hub``, ``param_schedulers``, hook entries), written by rank 0.

Every rank calls :func:`save_sharded` and :func:`load_sharded`. The folder
is written under ``<name>.partial`` and renamed when complete, so a crash
mid-save leaves the previous checkpoint intact. Multi-node runs need a
shared file system for the work dir. ``tools/misc/export_weights.py``
turns a sharded checkpoint into one safetensors file.
"""
import os
import os.path as osp
import shutil
import warnings
from typing import Dict, Iterable, Optional, Tuple

import torch
from torch import nn

from uno.utils.dist import is_distributed, rank
from .checkpoint import load_checkpoint_file, save_checkpoint_file

META_FILE = 'meta.pth'
FORMAT = 'uno-sharded-v1'
MODEL, OPTIM = 'model', 'optimizer'


def is_sharded_checkpoint(path) -> bool:
    """Whether ``path`` is a sharded checkpoint folder."""
    path = str(path)
    return osp.isdir(path) and osp.isfile(osp.join(path, '.metadata'))


def _barrier() -> None:
    if is_distributed():
        torch.distributed.barrier()


def save_sharded(path: str,
                 module: nn.Module,
                 optimizer: Optional[torch.optim.Optimizer] = None,
                 extras: Optional[dict] = None) -> None:
    """Save ``module`` (and ``optimizer``) as a sharded checkpoint.

    Args:
        path (str): The checkpoint folder.
        module (nn.Module): The (FSDP-sharded) trainer.
        optimizer (Optimizer, optional): Saved too when given. Defaults to
            None.
        extras (dict, optional): Anything else (meta, message hub,
            schedulers); written by rank 0 to ``meta.pth``. Defaults to
            None.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (get_model_state_dict,
                                                         get_state_dict)
    if optimizer is not None:
        model_sd, optim_sd = get_state_dict(module, optimizer)
        state = {MODEL: model_sd, OPTIM: optim_sd}
    else:
        state = {MODEL: get_model_state_dict(module)}
    partial = f'{path}.partial'
    if rank() == 0 and osp.exists(partial):
        shutil.rmtree(partial)
    _barrier()
    dcp.save(state, checkpoint_id=partial)
    if rank() == 0:
        save_checkpoint_file(dict(extras or {}, format=FORMAT),
                             osp.join(partial, META_FILE))
        if osp.isdir(path):
            shutil.rmtree(path)
        elif osp.exists(path):
            os.remove(path)
        os.replace(partial, path)
    _barrier()


def load_sharded_meta(path: str) -> dict:
    """``meta.pth`` of a sharded checkpoint (meta, message hub, ...)."""
    file = osp.join(path, META_FILE)
    if not osp.isfile(file):
        return {}
    return load_checkpoint_file(file)


def sharded_tensors(path: str,
                    prefix: str = MODEL + '.') -> Dict[str, Tuple]:
    """``{name: (shape, dtype)}`` of the tensors under ``prefix``.

    Read from the checkpoint's metadata only (no tensor is loaded); the
    prefix is removed from the names.
    """
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata
    metadata = FileSystemReader(path).read_metadata()
    out = {}
    for key, item in metadata.state_dict_metadata.items():
        if key.startswith(prefix) and isinstance(item,
                                                 TensorStorageMetadata):
            out[key[len(prefix):]] = (tuple(item.size),
                                      item.properties.dtype)
    return out


def read_sharded(path: str, names: Iterable[str],
                 prefix: str = MODEL + '.') -> Dict[str, torch.Tensor]:
    """Load the named tensors (full, on CPU) of a sharded checkpoint.

    Only those tensors are read; no process group is needed.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.default_planner import \
        DefaultLoadPlanner
    info = sharded_tensors(path, prefix)
    names = list(names)
    if not names:
        return {}
    inner = {n: torch.empty(info[n][0], dtype=info[n][1]) for n in names}
    with warnings.catch_warnings():  # 'assuming ... a single process'
        warnings.simplefilter('ignore', UserWarning)
        dcp.load({prefix.rstrip('.'): inner},
                 storage_reader=FileSystemReader(path),
                 planner=DefaultLoadPlanner(allow_partial_load=True),
                 no_dist=True)
    return inner


def load_sharded(path: str,
                 module: nn.Module,
                 optimizer: Optional[torch.optim.Optimizer] = None,
                 names: Optional[Iterable[str]] = None) -> None:
    """Load a sharded checkpoint into ``module`` (FSDP or not), in place.

    Every rank reads only its own shards; the world size may differ from
    the saving run's.

    Args:
        path (str): The checkpoint folder.
        module (nn.Module): The trainer.
        optimizer (Optimizer, optional): Its state is loaded too (resume).
            Defaults to None.
        names (Iterable[str], optional): Model tensors to load (all of the
            module's when None); check them first with
            :func:`sharded_tensors`. Defaults to None.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.default_planner import \
        DefaultLoadPlanner
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions, get_model_state_dict, get_state_dict,
        set_model_state_dict, set_optimizer_state_dict)
    if optimizer is not None:
        model_sd, optim_sd = get_state_dict(module, optimizer)
    else:
        model_sd, optim_sd = get_model_state_dict(module), None
    if names is not None:
        keep = set(names)
        model_sd = {k: v for k, v in model_sd.items() if k in keep}
    state = {MODEL: model_sd}
    if optim_sd is not None:
        state[OPTIM] = optim_sd
    dcp.load(state, checkpoint_id=path,
             planner=DefaultLoadPlanner(allow_partial_load=names is not None))
    set_model_state_dict(module, state[MODEL],
                         options=StateDictOptions(strict=False))
    if optim_sd is not None:
        set_optimizer_state_dict(module, optimizer, state[OPTIM])


def checkpoint_extras(runner, meta: Optional[dict], by_epoch: bool,
                      save_param_scheduler: bool) -> dict:
    """What mmengine's ``Runner.save_checkpoint`` stores besides the
    weights and the optimizer: meta (with the config), message hub and
    parameter schedulers (for ``meta.pth``)."""
    import time

    import mmengine
    from mmengine.utils import apply_to, get_git_hash
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
    extras = dict(meta=meta, message_hub=apply_to(
        runner.message_hub.state_dict(), lambda x: hasattr(x, 'cpu'),
        lambda x: x.cpu()))
    schedulers = runner.param_schedulers
    if save_param_scheduler and schedulers is not None:
        if isinstance(schedulers, dict):
            extras['param_schedulers'] = {
                k: [s.state_dict() for s in v]
                for k, v in schedulers.items()}
        else:
            extras['param_schedulers'] = [
                s.state_dict() for s in schedulers]
    return extras
