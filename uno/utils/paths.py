"""Where a config's runs live: work dir, MLflow experiment and run name.

A config's identity is its path below ``configs/`` (or below a project's
``configs/``): ``configs/ablations/metaquery_count/uno_mq16.py`` gives the
experiment ``ablations/metaquery_count`` and the run ``uno_mq16``, and the
default work dir ``work_dirs/ablations/metaquery_count/uno_mq16`` so two
ablations with the same file name never collide.
"""
import os.path as osp
from typing import NamedTuple, Optional


class ConfigIdentity(NamedTuple):
    """How a config names its runs."""
    relpath: str       # path below configs/ without '.py'
    experiment: str    # folder part of relpath ('' -> 'default')
    run_name: str      # file stem


def config_identity(filename: Optional[str]) -> ConfigIdentity:
    """Derive the identity of the config stored at ``filename``.

    The last ``configs`` component of the path is the anchor; a config
    outside any ``configs/`` folder is identified by its stem alone.
    """
    if not filename:
        return ConfigIdentity('unnamed', 'default', 'unnamed')
    path = osp.abspath(filename)
    stem = osp.splitext(osp.basename(path))[0]
    parts = path.split(osp.sep)
    if 'configs' in parts:
        idx = len(parts) - 1 - parts[::-1].index('configs')
        rel = parts[idx + 1:]
        # a project's configs live in projects/<name>/configs/: keep the
        # project name so its runs do not mix with the core configs'
        if idx >= 2 and parts[idx - 2] == 'projects':
            rel = ['projects', parts[idx - 1]] + rel
    else:
        rel = [osp.basename(path)]
    relpath = '/'.join(rel)[:-len('.py')] if rel[-1].endswith('.py') \
        else '/'.join(rel)
    experiment = '/'.join(relpath.split('/')[:-1]) or 'default'
    return ConfigIdentity(relpath, experiment, stem)


def default_work_dir(filename: Optional[str], root: str = 'work_dirs') -> str:
    """``work_dirs/<config path below configs/>``."""
    return osp.join(root, config_identity(filename).relpath)


def work_dirs_root(work_dir: str) -> str:
    """``work_dir`` up to its last ``work_dirs`` folder, else itself (where
    the default MLflow store of its runs lives)."""
    parts = osp.abspath(work_dir).split(osp.sep)
    if 'work_dirs' in parts:
        parts = parts[:len(parts) - parts[::-1].index('work_dirs')]
    return osp.sep.join(parts)


def check_writable(folder: str) -> None:
    """Create ``folder`` if needed and write a probe file in it, so a
    read-only, full or misnamed work dir fails before anything is built.

    Raises:
        UnoConfigError: Naming the folder and the system's reason.
    """
    import os
    import tempfile

    from uno.errors import UnoConfigError
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix='.write-probe.'):
            pass
    except OSError as e:
        raise UnoConfigError(
            f'work dir {folder} is not writable: {e.strerror or e} (choose '
            'another with --work-dir)') from e
