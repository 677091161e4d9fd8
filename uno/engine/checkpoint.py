"""Checkpoint files: inert to load, atomic to write, never lost.

Why and what is guaranteed: ``docs/checkpoints.md``.
"""
import contextlib
import copy
import os
import os.path as osp
import re
import shutil
import tempfile
import zipfile
from typing import Any, Dict, List, Optional

import torch

from uno.errors import UnoConfigError

LAST_CHECKPOINT = 'last_checkpoint'
_HISTORY = '__uno_history_buffer__'
_TEMP_RE = re.compile(r'^\..+\.tmp$|\.partial$')


class CheckpointError(UnoConfigError):
    """A checkpoint cannot be read (missing, damaged, or not inert)."""


def load_checkpoint_file(path: str, map_location: Any = 'cpu',
                         mmap: bool = False) -> Dict[str, Any]:
    """Load a ``.pth`` with ``weights_only=True`` (no code from it runs),
    uno's plain-stored objects rebuilt; ``mmap`` maps the file instead of
    reading it (large checkpoints read by every rank).

    Raises:
        CheckpointError: The path is missing, a folder, empty, damaged, or
            holds objects other than tensors and plain containers.
    """
    path = osp.expanduser(str(path))
    if not osp.exists(path):
        raise CheckpointError(f'checkpoint {path} does not exist')
    if osp.isdir(path):
        raise CheckpointError(f'checkpoint {path} is a folder, not a '
                              'checkpoint file or sharded checkpoint')
    if osp.getsize(path) == 0:
        raise CheckpointError(f'checkpoint {path} is empty (0 bytes)')
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f'checkpoint {path} is damaged or not a torch checkpoint '
            '(truncated, overwritten, or a pre-1.6 file?)')
    try:
        obj = torch.load(path, map_location=map_location,
                         weights_only=True, mmap=mmap)
    except MemoryError:
        raise
    except Exception as e:  # truncated zips, garbage: many error types
        from torch.serialization import get_unsafe_globals_in_checkpoint
        try:  # read from the pickle, not executed
            unsafe = list(get_unsafe_globals_in_checkpoint(path))
        except Exception:
            unsafe = []
        if unsafe:
            raise CheckpointError(
                f'checkpoint {path} holds objects other than tensors and '
                f'plain containers ({", ".join(unsafe[:5])}): refused '
                'unloaded, so no code in it runs; uno checkpoints hold '
                'none (it comes from another program, an older uno, or '
                'was crafted)') from e
        first = str(e).strip().splitlines()[-1] if str(e).strip() else ''
        raise CheckpointError(
            f'checkpoint {path} is damaged (truncated or overwritten?): '
            f'{type(e).__name__}: {first[:200]}') from e
    state = obj.get('state_dict', {}) if isinstance(obj, dict) else obj
    if not isinstance(state, dict):
        raise CheckpointError(
            f'checkpoint {path} holds a {type(obj).__name__}'
            + (f" whose 'state_dict' is a {type(state).__name__}"
               if state is not obj else '') + ', not a dict of tensors')
    return from_plain(obj)


def to_plain(obj: Any) -> Any:
    """``obj`` with every ``HistoryBuffer`` and numpy value made plain
    (the former as ``{'__uno_history_buffer__': ...}``)."""
    import numpy as np
    from mmengine.logging import HistoryBuffer
    if isinstance(obj, HistoryBuffer):
        logs, counts = obj.data
        return {_HISTORY: dict(log=logs.tolist(), count=counts.tolist(),
                               max_length=int(obj.max_length))}
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        out = copy.copy(obj)  # same type, attributes (``_metadata``) kept
        for k, v in obj.items():
            out[k] = to_plain(v)
        return out
    if isinstance(obj, (list, tuple)):
        items = [to_plain(v) for v in obj]
        return items if isinstance(obj, list) else tuple(items)
    return obj


def from_plain(obj: Any) -> Any:
    """Inverse of :func:`to_plain` for the history buffers."""
    if isinstance(obj, dict):
        if set(obj) == {_HISTORY}:
            from mmengine.logging import HistoryBuffer
            state = obj[_HISTORY]
            return HistoryBuffer(state['log'], state['count'],
                                 state['max_length'])
        for k, v in obj.items():
            obj[k] = from_plain(v)
    elif isinstance(obj, list):
        obj[:] = [from_plain(v) for v in obj]
    return obj


def _write_atomically(path: str, write) -> None:
    """``write(file)`` to a temporary file beside ``path``, fsync it and
    rename it over ``path``; nothing is left behind on failure."""
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{osp.basename(path)}.',
                               suffix='.tmp', dir=folder)
    os.close(fd)
    try:
        with open(tmp, 'wb') as f:
            out = _WriteErrors(f)
            try:
                write(out)
            except Exception as e:
                # torch.save reports a failed write (a full disk, a Ctrl-C
                # inside it) as an unrelated RuntimeError: raise what
                # happened, naming the file
                if isinstance(out.error, KeyboardInterrupt):
                    raise KeyboardInterrupt from e
                if out.error is not None and out.error is not e:
                    raise OSError(out.error.errno, out.error.strerror,
                                  path) from e
                raise
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise
    with contextlib.suppress(OSError):  # the rename survives a power loss
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class _WriteErrors:
    """A file that remembers the first error (or Ctrl-C) of its writes."""

    def __init__(self, f):
        self._f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self._f.write(data)
        except (OSError, KeyboardInterrupt) as e:
            self.error = self.error or e
            raise

    def __getattr__(self, name):
        return getattr(self._f, name)


def atomic_write(data: bytes, path: str) -> None:
    """Write ``data`` to ``path``: readers see the old or the new file."""
    _write_atomically(path, lambda f: f.write(data))


def save_checkpoint_file(checkpoint: Dict[str, Any], path: str) -> None:
    """``torch.save`` ``checkpoint`` (made plain) to ``path`` atomically."""
    _write_atomically(path, lambda f: torch.save(to_plain(checkpoint), f))


def write_last_checkpoint(work_dir: str, checkpoint_path: str) -> None:
    """Point ``work_dir/last_checkpoint`` at ``checkpoint_path``."""
    atomic_write(str(checkpoint_path).encode(),
                 osp.join(work_dir, LAST_CHECKPOINT))


def read_last_checkpoint(work_dir: str) -> Optional[str]:
    """What ``work_dir/last_checkpoint`` names (None without the file)."""
    pointer = osp.join(work_dir, LAST_CHECKPOINT)
    if not osp.isfile(pointer):
        return None
    with open(pointer) as f:
        return f.read().strip()


def remove_checkpoint(path: str) -> None:
    """Remove a checkpoint file or sharded folder if it exists."""
    if osp.isdir(path):
        shutil.rmtree(path)
    elif osp.exists(path):
        os.remove(path)


def checkpoint_step(path: str, filename_tmpl: Optional[str] = None) -> int:
    """The N of ``iter_N.pth``, ``epoch_N.pth`` or ``filename_tmpl`` (one
    ``{}`` for N) naming ``path``; -1 for other names."""
    names = [r'(?:iter|epoch)_(\d+)\.pth']
    if filename_tmpl and filename_tmpl.count('{}') == 1:
        head, tail = filename_tmpl.split('{}')
        names.append(re.escape(head) + r'(\d+)' + re.escape(tail))
    m = re.fullmatch('|'.join(names), osp.basename(str(path).rstrip('/')))
    return int(next(g for g in m.groups() if g)) if m else -1


def checkpoint_candidates(work_dir: str,
                          filename_tmpl: Optional[str] = None) -> List[str]:
    """A work dir's checkpoints to resume from, the newest first: the one
    ``last_checkpoint`` names if it exists, then the periodic ones (files
    or sharded folders, see :func:`checkpoint_step`) by decreasing N."""
    if not osp.isdir(work_dir):
        return []
    steps = {osp.join(work_dir, n): checkpoint_step(n, filename_tmpl)
             for n in os.listdir(work_dir)}
    found = sorted((p for p, step in steps.items() if step >= 0),
                   key=steps.get, reverse=True)
    named = read_last_checkpoint(work_dir)
    if named and osp.exists(osp.join(work_dir, named)):  # or absolute
        named = osp.join(work_dir, named)
        found = [named] + [p for p in found
                           if osp.abspath(p) != osp.abspath(named)]
    return found


def remove_stale_temps(work_dir: str) -> List[str]:
    """Remove what killed saves left in ``work_dir`` (``.<name>.*.tmp``
    files, ``*.partial`` folders); returns their names."""
    if not osp.isdir(work_dir):
        return []
    removed = [n for n in os.listdir(work_dir) if _TEMP_RE.search(n)]
    for name in removed:
        path = osp.join(work_dir, name)
        if osp.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.remove(path)
    return removed
