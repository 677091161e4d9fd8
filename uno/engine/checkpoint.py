"""Checkpoint files: inert to load, atomic to write, never lost.

* **Inert loading.** Every ``.pth`` uno reads (``load_from``, ``--resume``,
  ``tools/test.py``, ``tools/misc/export_weights.py``, a sharded
  checkpoint's ``meta.pth``) goes through :func:`load_checkpoint_file`:
  ``torch.load(weights_only=True)`` and nothing else — tensors, numbers,
  strings and plain containers. A file whose unpickling would call or
  build anything else is refused with one line, never executed. uno's own
  checkpoints need no allow-list: :func:`to_plain` stores mmengine's
  ``HistoryBuffer`` (whose pickle calls ``getattr``) as plain lists, and
  :func:`from_plain` rebuilds it after a safe load.
* **Atomic writes.** :func:`save_checkpoint_file` and :func:`atomic_write`
  write to a temporary name in the target's folder, fsync, and rename over
  the target: a reader sees the old file or the new one, never a part.
* **Nothing lost.** :func:`checkpoint_candidates` lists a work dir's
  complete checkpoints newest first (from ``last_checkpoint`` and from the
  files themselves), so a missing or dangling ``last_checkpoint`` never
  restarts a run over old work; :func:`remove_stale_temps` clears what a
  killed save left behind. Rotation lives in
  :class:`uno.engine.hooks.UnoCheckpointHook` (old files go only after
  the new one is complete).
"""
import copy
import os
import os.path as osp
import re
import tempfile
import zipfile
from typing import Any, Dict, List, Optional

import torch

from uno.errors import UnoConfigError

LAST_CHECKPOINT = 'last_checkpoint'
_HISTORY = '__uno_history_buffer__'
_TEMP_RE = re.compile(r'^\..+\.tmp$|\.partial$')


class CheckpointError(UnoConfigError):
    """A checkpoint file cannot be read (missing, damaged, or not inert).
    One line, exit status 2 in the tools."""


def load_checkpoint_file(path: str, map_location: Any = 'cpu',
                         mmap: bool = False) -> Dict[str, Any]:
    """Load a ``.pth`` without running any code from it.

    Args:
        path (str): The file.
        map_location: As ``torch.load``'s. Defaults to 'cpu'.
        mmap (bool): Map the file instead of reading it (large
            checkpoints read by every rank). Defaults to False.

    Returns:
        dict: The checkpoint, with uno's plain-stored objects rebuilt.

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
    except Exception as e:  # truncated zips, garbage: many error types
        if isinstance(e, MemoryError):
            raise
        unsafe = _unsafe_globals(path)
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


def _unsafe_globals(path: str) -> List[str]:
    """Globals the file's pickle would import (read, not executed)."""
    from torch.serialization import get_unsafe_globals_in_checkpoint
    try:
        return list(get_unsafe_globals_in_checkpoint(path))
    except Exception:
        return []


def to_plain(obj: Any) -> Any:
    """``obj`` with every ``HistoryBuffer`` and numpy value made plain.

    mmengine's message hub keeps ``HistoryBuffer`` objects (numpy arrays
    and bound methods); pickled as they are, they need ``getattr`` and
    numpy's reconstructors at load time, which an inert loader must not
    allow. They are stored as ``{'__uno_history_buffer__': ...}``.
    """
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


def _temp_in(folder: str, name: str) -> str:
    fd, tmp = tempfile.mkstemp(prefix=f'.{name}.', suffix='.tmp',
                               dir=folder)
    os.close(fd)
    return tmp


def _replace_durably(tmp: str, path: str) -> None:
    os.replace(tmp, path)
    try:  # the rename itself survives a power loss
        fd = os.open(osp.dirname(osp.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def _write_atomically(path: str, write) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it,
    and rename it over ``path``; nothing is left behind on failure."""
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = _temp_in(folder, osp.basename(path))
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
        _replace_durably(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


class _WriteErrors:
    """A file that remembers the first ``OSError`` (or Ctrl-C) of its
    ``write``."""

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
    """Write ``data`` to ``path`` so readers see the old or the new file,
    never a partial one."""
    _write_atomically(path, lambda f: f.write(data))


def save_checkpoint_file(checkpoint: Dict[str, Any], path: str) -> None:
    """``torch.save`` ``checkpoint`` (made plain) to ``path`` atomically."""
    _write_atomically(path, lambda f: torch.save(to_plain(checkpoint), f))


def write_last_checkpoint(work_dir: str, checkpoint_path: str) -> None:
    """Point ``work_dir/last_checkpoint`` at ``checkpoint_path``
    (atomically)."""
    atomic_write(str(checkpoint_path).encode(),
                 osp.join(work_dir, LAST_CHECKPOINT))


def _steps_re(filename_tmpl: Optional[str] = None):
    """Names of periodic checkpoints: ``iter_N.pth``, ``epoch_N.pth`` and
    the checkpoint hook's ``filename_tmpl`` (one ``{}`` for N) if given."""
    names = [r'(?:iter|epoch)_(\d+)\.pth']
    if filename_tmpl and filename_tmpl.count('{}') == 1:
        head, tail = filename_tmpl.split('{}')
        names.append(re.escape(head) + r'(\d+)' + re.escape(tail))
    return re.compile('^(?:' + '|'.join(names) + ')$')


def checkpoint_step(path: str, filename_tmpl: Optional[str] = None) -> int:
    """The step N of a periodic checkpoint's name (-1 for other names)."""
    m = _steps_re(filename_tmpl).match(osp.basename(str(path).rstrip('/')))
    return int(next(g for g in m.groups() if g)) if m else -1


def checkpoint_candidates(work_dir: str,
                          filename_tmpl: Optional[str] = None) -> List[str]:
    """A work dir's checkpoints to resume from, the newest first.

    The one ``last_checkpoint`` names comes first when it exists; then
    every periodic checkpoint (``iter_N.pth``, ``epoch_N.pth`` or named by
    ``filename_tmpl``; file or sharded folder) by decreasing N. Temporary
    files of killed saves are never listed.
    """
    if not osp.isdir(work_dir):
        return []
    steps = {osp.join(work_dir, n): checkpoint_step(n, filename_tmpl)
             for n in os.listdir(work_dir)}
    found = sorted((p for p, step in steps.items() if step >= 0),
                   key=steps.get, reverse=True)
    pointer = osp.join(work_dir, LAST_CHECKPOINT)
    if osp.isfile(pointer):
        with open(pointer) as f:
            named = f.read().strip()
        if named and not osp.isabs(named):
            named = osp.join(work_dir, named)
        if named and osp.exists(named):
            found = [named] + [p for p in found
                               if osp.abspath(p) != osp.abspath(named)]
    return found


def remove_stale_temps(work_dir: str) -> List[str]:
    """Remove what killed saves left in ``work_dir``: ``.<name>.*.tmp``
    files and ``*.partial`` sharded folders. Returns their names."""
    import shutil
    removed = []
    if not osp.isdir(work_dir):
        return removed
    for name in os.listdir(work_dir):
        if not _TEMP_RE.search(name):
            continue
        path = osp.join(work_dir, name)
        if osp.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.remove(path)
        removed.append(name)
    return removed
