"""Run a ``tools/*.py`` command in-process, as its command line would.

A tool's import of torch and mmengine costs ~7 s per process; in-process
runs share the test session's. Use a subprocess only where the CLI
contract itself (exit status, nothing printed at import) is under test.
"""
import contextlib
import importlib.util
import io
import json
import os
import os.path as osp
import socket
import sys
import traceback
from typing import Dict, List, Optional, Tuple

import pytest

from tests.conftest import REPO, reset_mmengine_singletons

_modules = {}


def tool_module(name: str):
    """``tools/<name>.py`` imported as a module (once)."""
    if name not in _modules:
        path = osp.join(REPO, 'tools', f'{name}.py')
        spec = importlib.util.spec_from_file_location(
            f'uno_tool_{name.replace("/", "_")}', path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _modules[name] = module
    return _modules[name]


def run_tool(name: str, argv: List[str], monkeypatch=None, capsys=None,
             env: Optional[Dict[str, str]] = None) -> Tuple[int, str, str]:
    """Call ``tools/<name>.py``'s ``main()`` with ``argv`` from the repo
    root.

    Args:
        name (str): The tool below ``tools/`` without ``.py``.
        argv (list[str]): Its command-line arguments.
        monkeypatch, capsys: pytest's fixtures, when the caller has them;
            without them (a module-scoped fixture) the working directory,
            ``sys.argv`` and ``env`` are restored and the output captured
            here.
        env (dict, optional): Environment variables set for the call.

    Returns:
        tuple: The exit status (what ``main`` returns, else 0; 1 with the
        traceback on stderr when it raises), and what it wrote to stdout
        and stderr.
    """
    if monkeypatch is None:
        with pytest.MonkeyPatch.context() as mp:
            return run_tool(name, argv, mp, capsys, env)
    if capsys is None:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = _call(name, argv, monkeypatch, env)
        return code, out.getvalue(), err.getvalue()
    capsys.readouterr()
    code = _call(name, argv, monkeypatch, env)
    out, err = capsys.readouterr()
    return code, out, err


def _call(name, argv, monkeypatch, env) -> int:
    module = tool_module(name)
    reset_mmengine_singletons()  # a fresh process has none
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, 'argv', [f'tools/{name}.py'] + list(argv))
    try:
        returned = module.main()
        return returned if isinstance(returned, int) else 0
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None
                                                       else 1)
    except Exception:  # as Python would: the traceback, exit status 1
        traceback.print_exc()
        return 1


def free_port() -> int:
    """A TCP port free on this machine now (for a launcher's rendezvous;
    a fixed one collides with a concurrent test run)."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def logged_rows(work_dir) -> List[dict]:
    """Every row of every ``scalars.json`` under ``work_dir`` (the local
    log of each run started there, oldest folder first)."""
    rows = []
    for root, dirs, files in os.walk(work_dir):
        dirs.sort()
        if 'scalars.json' in files:
            with open(osp.join(root, 'scalars.json')) as f:
                rows += [json.loads(line) for line in f]
    return rows


def train_rows(work_dir) -> Dict[int, dict]:
    """``{step: row}`` of the training rows (those with ``loss``) logged
    under ``work_dir``; a step logged twice keeps the later row."""
    rows = {r['step']: r for r in logged_rows(work_dir) if 'loss' in r}
    if not rows:
        raise AssertionError(f'no training rows in a scalars.json under '
                             f'{work_dir}')
    return rows
