"""Run a ``tools/*.py`` command in-process, as its command line would.

A tool's import of torch and mmengine costs ~7 s per process; in-process
runs share the test session's. Use a subprocess only where the CLI
contract itself (exit status, nothing printed at import) is under test.
"""
import importlib.util
import os.path as osp
import sys
import traceback
from typing import List, Tuple

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


def run_tool(name: str, argv: List[str], monkeypatch,
             capsys) -> Tuple[int, str, str]:
    """Call ``tools/<name>.py``'s ``main()`` with ``argv`` from the repo
    root.

    Returns:
        tuple: The exit status (what ``main`` returns, else 0; 1 with the
        traceback on stderr when it raises), and what it wrote to stdout
        and stderr.
    """
    module = tool_module(name)
    reset_mmengine_singletons()  # a fresh process has none
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, 'argv', [f'tools/{name}.py'] + list(argv))
    capsys.readouterr()
    try:
        returned = module.main()
        code = returned if isinstance(returned, int) else 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None
                                                       else 1)
    except Exception:  # as Python would: the traceback, exit status 1
        traceback.print_exc()
        code = 1
    out, err = capsys.readouterr()
    return code, out, err
