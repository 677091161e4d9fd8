"""Sharded checkpoints (``torch.distributed.checkpoint``) of FSDP runs.

A folder named like a checkpoint file (``iter_2000.pth/``), saved and
loaded by every rank on any world size: ``docs/checkpoints.md``.
"""
import os
import os.path as osp
import warnings
from typing import Dict, Iterable, Optional, Tuple

import torch
from torch import nn

from uno.utils.dist import is_distributed, rank
from .checkpoint import (load_checkpoint_file, remove_checkpoint,
                         save_checkpoint_file)

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


def _state(module: nn.Module, optimizer) -> dict:
    """The DCP state of ``module`` (and ``optimizer`` unless None)."""
    from torch.distributed.checkpoint.state_dict import (get_model_state_dict,
                                                         get_state_dict)
    if optimizer is None:
        return {MODEL: get_model_state_dict(module)}
    model_sd, optim_sd = get_state_dict(module, optimizer)
    return {MODEL: model_sd, OPTIM: optim_sd}


def save_sharded(path: str,
                 module: nn.Module,
                 optimizer: Optional[torch.optim.Optimizer] = None,
                 extras: Optional[dict] = None) -> None:
    """Save ``module`` (the FSDP-sharded trainer) and ``optimizer`` as a
    sharded checkpoint, written as ``<path>.partial`` and renamed when
    complete; ``extras`` (meta, message hub, schedulers) go to
    ``meta.pth``, written by rank 0."""
    import torch.distributed.checkpoint as dcp
    state = _state(module, optimizer)
    partial = f'{path}.partial'
    if rank() == 0:
        remove_checkpoint(partial)
    _barrier()
    dcp.save(state, checkpoint_id=partial)
    if rank() == 0:
        save_checkpoint_file(dict(extras or {}, format=FORMAT),
                             osp.join(partial, META_FILE))
        remove_checkpoint(path)
        os.replace(partial, path)
    _barrier()


def load_sharded_meta(path: str) -> dict:
    """``meta.pth`` of a sharded checkpoint (meta, message hub, ...)."""
    file = osp.join(path, META_FILE)
    return load_checkpoint_file(file) if osp.isfile(file) else {}


def sharded_tensors(path: str,
                    prefix: str = MODEL + '.') -> Dict[str, Tuple]:
    """``{name: (shape, dtype)}`` of the tensors under ``prefix`` (removed
    from the names), from the checkpoint's metadata only."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata
    metadata = FileSystemReader(path).read_metadata()
    return {key[len(prefix):]: (tuple(item.size), item.properties.dtype)
            for key, item in metadata.state_dict_metadata.items()
            if key.startswith(prefix)
            and isinstance(item, TensorStorageMetadata)}


def read_sharded(path: str, names: Iterable[str],
                 prefix: str = MODEL + '.') -> Dict[str, torch.Tensor]:
    """Load the named tensors (full, on CPU) of a sharded checkpoint, and
    only those; no process group is needed."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.default_planner import \
        DefaultLoadPlanner
    names = list(names)
    if not names:
        return {}
    info = sharded_tensors(path, prefix)
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
    """Load a sharded checkpoint into ``module`` (FSDP or not) in place;
    every rank reads only its own shards, on any world size.

    Args:
        optimizer (Optimizer, optional): Its state is loaded too (resume).
        names (Iterable[str], optional): Model tensors to load (None: all
            of the module's); check them first with
            :func:`sharded_tensors`.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.default_planner import \
        DefaultLoadPlanner
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions, set_model_state_dict, set_optimizer_state_dict)
    state = _state(module, optimizer)
    if names is not None:
        keep = set(names)
        state[MODEL] = {k: v for k, v in state[MODEL].items() if k in keep}
    dcp.load(state, checkpoint_id=path,
             planner=DefaultLoadPlanner(allow_partial_load=names is not None))
    set_model_state_dict(module, state[MODEL],
                         options=StateDictOptions(strict=False))
    if optimizer is not None:
        set_optimizer_state_dict(module, optimizer, state[OPTIM])
