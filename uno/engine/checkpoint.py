"""Checkpoints that survive crashes and load under torch >= 2.6.

Two fixes at the mmengine boundary, installed by importing
``uno.engine``:

* **Trusted local loading.** mmengine 0.10.7 loads checkpoints with
  ``torch.load``'s default ``weights_only=True`` (torch >= 2.6), which
  rejects the message-hub history mmengine itself saves, so ``--resume``
  fails with ``UnpicklingError``. Local checkpoints written by your own
  runs are trusted files: they load with ``weights_only=False``.
* **Atomic writes.** Every local file mmengine writes through its file
  backend (checkpoints, ``last_checkpoint``) goes to a temporary name in
  the same folder, is flushed and fsync'ed, and is renamed over the
  target. A process killed mid-save leaves the previous checkpoint intact
  and ``last_checkpoint`` pointing at a complete file.
"""
import os
import os.path as osp
import tempfile
from typing import Dict, List

import torch
from mmengine.fileio import LocalBackend, register_backend
from mmengine.runner import CheckpointLoader
from torch import nn


@CheckpointLoader.register_scheme(prefixes='', force=True)
def load_trusted_local(filename: str, map_location=None):
    """Load a local checkpoint written by uno/mmengine (trusted)."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint {filename} does not exist')
    return torch.load(filename, map_location=map_location,
                      weights_only=False)


def atomic_write(data: bytes, path: str) -> None:
    """Write ``data`` to ``path`` so readers see the old or the new file,
    never a partial one."""
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{osp.basename(path)}.',
                               suffix='.tmp', dir=folder)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend with atomic ``put``/``put_text``."""

    def put(self, obj: bytes, filepath) -> None:
        atomic_write(obj, str(filepath))

    def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
        atomic_write(obj.encode(encoding), str(filepath))


register_backend('local', AtomicLocalBackend, force=True, prefixes='')


def state_dict_mismatch(model: nn.Module,
                        state_dict: Dict[str, torch.Tensor]) -> Dict:
    """Missing, unexpected and shape-mismatched keys of ``state_dict``."""
    own = model.state_dict()
    shapes: List[str] = [
        f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
        for k, v in state_dict.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    return dict(
        missing=sorted(set(own) - set(state_dict)),
        unexpected=sorted(set(state_dict) - set(own)),
        shape=shapes)


def load_model_weights(model: nn.Module,
                       state_dict: Dict[str, torch.Tensor],
                       strict: bool = True) -> Dict:
    """Load ``state_dict`` into ``model``, naming every mismatch.

    Raises:
        RuntimeError: With ``strict``, when any key is missing, unexpected
            or of another shape; the message lists them (first 10 each).
    """
    report = state_dict_mismatch(model, state_dict)
    if strict and any(report.values()):
        parts = []
        for kind, keys in report.items():
            if keys:
                shown = ', '.join(keys[:10])
                more = f' (+{len(keys) - 10} more)' if len(keys) > 10 else ''
                parts.append(f'{kind}: {shown}{more}')
        raise RuntimeError('checkpoint does not match the model; '
                           + '; '.join(parts) +
                           ' (pass strict=False to load what matches)')
    own = model.state_dict()
    loadable = {k: v for k, v in state_dict.items()
                if k in own and tuple(v.shape) == tuple(own[k].shape)}
    model.load_state_dict(loadable, strict=False)
    return report
