"""Command-line plumbing shared by tools/*.py (not part of the package).

A configuration error is one line on stderr and exit status 2 (a traceback
only with ``--debug``): :class:`UnoConfigError` from anywhere in the run;
any error while the config file loads or ``--cfg-options`` merge (the file
is the user's code); a ``ValueError``, ``TypeError``, ``KeyError``,
``IndexError`` or ``AssertionError`` raised by a constructor inside a
registry build (:func:`uno.utils.config_check.config_build_errors`),
eager or lazy; a command-line usage error; a failed write (naming the
file); a collective broken by another rank's stall or death. Errors
outside a build (a training step, a hook) keep their traceback.
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
    """argparse's parser whose usage errors (a missing argument, ``--seed
    abc``) are one line, ``error: ... (see --help)``, and exit status 2."""

    def error(self, message: str):
        fail(f'{message} (see {self.prog} --help)')


def load_config(path: str, options=None):
    """``Config.fromfile`` + ``--cfg-options`` with readable failures."""
    from mmengine.config import Config

    from uno.errors import UnoConfigError
    if not osp.isfile(path):
        raise UnoConfigError(f'config file {path} does not exist')
    try:
        cfg = Config.fromfile(path)
    except UnoConfigError:
        raise
    except FileNotFoundError as e:
        raise UnoConfigError(f'cannot load {path}: {e}') from e
    except ImportError as e:
        cause = e.__cause__  # mmengine wraps a failed custom import
        if isinstance(cause, ImportError):
            raise UnoConfigError(
                f'{path}: custom_imports failed: {cause} (set PYTHONPATH to '
                'the folder that holds the module)') from e
        raise UnoConfigError(f'cannot parse {path}: '
                             f'{type(e).__name__}: {e}') from e
    except (SyntaxError, KeyError, NameError) as e:
        raise UnoConfigError(f'cannot parse {path}: '
                             f'{type(e).__name__}: {e}') from e
    except Exception as e:  # the config file is code: any error is its own
        raise UnoConfigError(f'cannot load {path}: '
                             f'{type(e).__name__}: {e}') from e
    if options:
        try:
            cfg.merge_from_dict(options)
        except Exception as e:
            raise UnoConfigError(f'cannot apply --cfg-options {options}: '
                                 f'{type(e).__name__}: {e}') from e
    _loaded['cfg'] = cfg
    return cfg


def cfg_options_action():
    """mmengine's ``DictAction`` for ``--cfg-options``, where a malformed
    item (no ``=``, an empty key, an unbalanced bracket) is one line and
    exit status 2 instead of a traceback from inside argparse."""
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
                     f'({type(e).__name__}: {e})')

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
        cfg (Config): The loaded config; changed in place.
        run_name (str, optional): The run name; wins over the config's.
        tags (Sequence[str]): ``KEY=VALUE`` strings, merged over the
            backend's ``tags``.
        default_run_name (str, optional): Used when neither ``run_name``
            nor the config names the run.

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
    """Run ``main()``; a configuration error is one line and exit 2, a
    deliberate stop (TrainingStopped) one line and exit 3, a failed write
    (full disk, read-only folder) one line naming the file and exit 2, a
    collective that another rank's stall or death broke one line and exit
    2."""
    from uno.errors import (TrainingStopped, UnoConfigError,
                            collective_failure)
    from uno.utils.config_check import config_build_errors
    try:
        with config_build_errors(lambda: _loaded.get('cfg')):
            main()
    except UnoConfigError as e:
        if debug:
            raise
        print(f'error: {_one_line(e)}', file=sys.stderr)
        sys.exit(2)
    except TrainingStopped as e:
        if debug:
            raise
        print(f'stopped: {_one_line(e)}', file=sys.stderr)
        sys.exit(3)
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
    """Run the atexit handlers (logging flushes and closes its files,
    MLflow ends its run), flush the standard streams and end the process
    without the interpreter's teardown of every module and C++ object."""
    import atexit
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def exit_as_script(main) -> None:
    """``main()`` of a tool run as a script, then a fast exit.

    Python's teardown after a tool finishes (freeing torch, transformers,
    MLflow and their C++ objects) took 2-6 s on a 2-core CPU: every run of
    a tool and every rank of a launch paid it after the work was done. A
    tool's files are closed by then (checkpoints and metrics are written
    with ``with``; logging closes its files in an atexit handler), so the
    process leaves after the atexit handlers. A normal exit is kept where
    another non-daemon thread still runs (Python would wait for it) and
    for an uncaught exception (its traceback).
    """
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


def _one_line(exc: BaseException) -> str:
    """The message of ``exc`` with its lines joined."""
    return ' '.join(
        line.strip() for line in str(exc).splitlines() if line.strip())
