"""Shared command-line plumbing of tools/*.py (not part of the package).

Loads a config with ``--cfg-options``, turns uno's configuration errors into
one clear line on stderr with exit status 2 (a traceback only with
``--debug``), and makes ``import uno`` work from a source checkout.
"""
import os
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

os.environ.setdefault('MLFLOW_DISABLE_TELEMETRY', 'true')
os.environ.setdefault('HF_HUB_OFFLINE', '1')


def load_config(path: str, options=None):
    """``Config.fromfile`` + ``--cfg-options`` with readable failures."""
    from mmengine.config import Config

    from uno.utils.errors import UnoConfigError
    if not osp.isfile(path):
        raise UnoConfigError(f'config file {path} does not exist')
    try:
        cfg = Config.fromfile(path)
    except FileNotFoundError as e:
        raise UnoConfigError(f'cannot load {path}: {e}') from e
    except (SyntaxError, ImportError, KeyError, NameError) as e:
        raise UnoConfigError(f'cannot parse {path}: '
                             f'{type(e).__name__}: {e}') from e
    if options:
        cfg.merge_from_dict(options)
    return cfg


def run_cli(main, debug: bool) -> None:
    """Run ``main()``; a configuration error is one line and exit 2, a
    deliberate stop (TrainingStopped) one line and exit 3."""
    from uno.utils.errors import TrainingStopped, UnoConfigError
    try:
        main()
    except UnoConfigError as e:
        if debug:
            raise
        print(f'error: {e}', file=sys.stderr)
        sys.exit(2)
    except TrainingStopped as e:
        if debug:
            raise
        print(f'stopped: {e}', file=sys.stderr)
        sys.exit(3)
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        sys.exit(130)
