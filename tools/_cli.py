"""Command-line plumbing shared by tools/*.py (not part of the package).

An error is one line on stderr and exit status 2 (3: a deliberate stop,
130: Ctrl-C), a traceback only with ``--debug``: docs/configs.md,
"Command-line contract".
"""
import argparse
import errno
import os
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

os.environ.setdefault('MLFLOW_DISABLE_TELEMETRY', 'true')
os.environ.setdefault('HF_HUB_OFFLINE', '1')
# MLflow's INFO chatter (store migrations) off; uno's backend reports
os.environ.setdefault('MLFLOW_LOGGING_LEVEL', 'WARNING')

# the config loaded last, where build errors look up component paths
_loaded = {}


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser whose usage errors are one line and exit 2."""

    def error(self, message: str):
        fail(f'{message} (see {self.prog} --help)')


def load_config(path: str, options=None):
    """``Config.fromfile`` + ``--cfg-options``.

    Raises:
        UnoConfigError: Any failure, in one line.
    """
    from mmengine.config import Config

    from uno.errors import UnoConfigError
    if not osp.isfile(path):
        raise UnoConfigError(f'config file {path} does not exist')
    try:
        cfg = Config.fromfile(path)
    except UnoConfigError:
        raise
    except Exception as e:  # the config file is code: any error is its own
        cause = e.__cause__  # mmengine wraps a failed custom import
        if isinstance(e, ImportError) and isinstance(cause, ImportError):
            raise UnoConfigError(
                f'{path}: custom_imports failed: {cause} (set PYTHONPATH to '
                'the folder that holds the module)') from e
        verb = 'parse' if isinstance(
            e, (ImportError, SyntaxError, KeyError, NameError)) else 'load'
        detail = e if isinstance(e, FileNotFoundError) else _named(e)
        raise UnoConfigError(f'cannot {verb} {path}: {detail}') from e
    if options:
        try:
            cfg.merge_from_dict(options)
        except Exception as e:
            raise UnoConfigError(
                f'cannot apply --cfg-options {options}: {_named(e)}') from e
    _loaded['cfg'] = cfg
    return cfg


def cfg_options_action():
    """mmengine's ``DictAction`` for ``--cfg-options``, where a malformed
    item is one line and exit status 2."""
    from mmengine.config import DictAction

    class CfgOptions(DictAction):

        def __call__(self, parser, namespace, values, option_string=None):
            for item in values:
                key, sep, value = item.partition('=')
                if not sep or not key.strip():
                    fail(f'--cfg-options {item!r}: use KEY=VALUE, e.g. '
                         'train_cfg.max_iters=100')
                if value.count('[') != value.count(']') or \
                        value.count('(') != value.count(')'):
                    fail(f'--cfg-options {item!r}: unbalanced brackets in '
                         'the value')
            try:
                super().__call__(parser, namespace, values, option_string)
            except Exception as e:
                fail(f'--cfg-options {" ".join(values)}: cannot parse '
                     f'({_named(e)})')

    return CfgOptions


def fail(message: str) -> None:
    """``error: <message>`` on stderr and exit status 2."""
    print(f'error: {message}', file=sys.stderr)
    sys.exit(2)


#: the environment each launcher's set-up reads (mmengine.dist.init_dist)
LAUNCHER_ENV = dict(
    pytorch=(('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'),
             'start with tools/dist_train.sh CONFIG NUM_GPUS (or torchrun)'),
    slurm=(('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_NODELIST'),
           'start it under srun (SLURM)'),
    mpi=(('OMPI_COMM_WORLD_LOCAL_RANK', 'OMPI_COMM_WORLD_RANK',
          'OMPI_COMM_WORLD_SIZE'), 'start with mpirun (Open MPI)'))


def check_launcher(launcher: str) -> None:
    """``--launcher pytorch|slurm|mpi`` needs the environment its starter
    (torchrun, srun, mpirun) sets."""
    from uno.errors import UnoConfigError
    world = os.environ.get('WORLD_SIZE', '1')
    if launcher == 'none' and world.isdigit() and int(world) > 1:
        # every rank would train the whole run alone, into one work dir
        raise UnoConfigError(
            f'WORLD_SIZE={world} is set (torchrun?) but --launcher is '
            'none: pass --launcher pytorch (tools/dist_train.sh does), or '
            'unset WORLD_SIZE and RANK to run one process')
    if launcher not in LAUNCHER_ENV:
        return
    need, how = LAUNCHER_ENV[launcher]
    missing = [k for k in need if k not in os.environ]
    if missing:
        raise UnoConfigError(
            f'--launcher {launcher} needs the environment its starter sets '
            f'({", ".join(missing)} missing): {how}, or drop --launcher')


def add_mlflow_args(parser) -> None:
    """Add ``--mlflow-run-name`` and ``--mlflow-tag KEY=VALUE ...``."""
    parser.add_argument(
        '--mlflow-run-name', metavar='NAME',
        help='MLflow run name (default: from the config file name)')
    parser.add_argument(
        '--mlflow-tag', nargs='+', action='extend', default=[],
        metavar='KEY=VALUE', help='extra MLflow run tags, e.g. seed=1')


def apply_mlflow_args(cfg, run_name=None, tags=(), default_run_name=None):
    """Give the config's ``UnoMLflowVisBackend`` a run name and tags.

    Args:
        cfg (Config): Changed in place.
        run_name (str, optional): Wins over the config's.
        tags (Sequence[str]): ``KEY=VALUE``, merged over the backend's.
        default_run_name (str, optional): When neither names the run.

    Returns:
        dict: The parsed tags.

    Raises:
        UnoConfigError: A tag without ``=`` or with an empty key.
    """
    from uno.errors import UnoConfigError
    parsed = {}
    for item in tags or ():
        key, sep, value = item.partition('=')
        if not sep or not key.strip():
            raise UnoConfigError(f'--mlflow-tag {item!r}: use KEY=VALUE')
        parsed[key.strip()] = value
    for backend in cfg.get('visualizer', {}).get('vis_backends', []):
        if not isinstance(backend, dict) or backend.get(
                'type') != 'UnoMLflowVisBackend':  # validate_config says
            continue
        if run_name:
            backend['run_name'] = run_name
        elif default_run_name:
            backend.setdefault('run_name', default_run_name)
        if parsed:
            backend['tags'] = {**(backend.get('tags') or {}), **parsed}
    return parsed


def run_cli(main, debug: bool) -> None:
    """Run ``main()``, its expected errors one line and an exit status."""
    from uno.errors import (TrainingStopped, UnoConfigError,
                            collective_failure)
    from uno.utils.config_check import config_build_errors
    try:
        with config_build_errors(lambda: _loaded.get('cfg')):
            main()
    except (UnoConfigError, TrainingStopped) as e:
        if debug:
            raise
        word, code = (('error', 2) if isinstance(e, UnoConfigError)
                      else ('stopped', 3))
        lines = (line.strip() for line in str(e).splitlines())
        print(f'{word}: {" ".join(filter(None, lines))}', file=sys.stderr)
        sys.exit(code)
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        sys.exit(130)
    except RuntimeError as e:  # another rank stalled or died
        import torch.distributed as dist
        message = collective_failure(e) if dist.is_available() and \
            dist.is_initialized() else ''
        if debug or not message:
            raise
        print(f'error: {message}', file=sys.stderr)
        # a normal exit destroys the broken gloo group, whose threads are
        # still joinable, and the C++ runtime aborts (SIGABRT): leave
        # without the C++ destructors
        _leave(2)
    except OSError as e:  # a full disk, a read-only or vanished folder
        if debug or e.errno not in _WRITE_ERRNOS:
            raise
        where = f' {e.filename}' if e.filename else ''
        print(f'error: cannot write{where}: {e.strerror}', file=sys.stderr)
        sys.exit(2)


def _leave(code: int) -> None:
    """Run the atexit handlers, flush stdout and stderr, and end without
    the interpreter's teardown."""
    import atexit
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def exit_as_script(main) -> None:
    """``main()`` of a tool run as a script, then an exit without the
    interpreter's teardown unless another non-daemon thread runs."""
    import threading
    try:
        code = main()
    except SystemExit as e:
        code = e.code
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    others = [t for t in threading.enumerate()
              if t is not threading.main_thread() and not t.daemon]
    if others:
        sys.exit(code)
    _leave(code or 0)


_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES,
                 errno.EPERM}


def _named(exc: BaseException) -> str:
    return f'{type(exc).__name__}: {exc}'
