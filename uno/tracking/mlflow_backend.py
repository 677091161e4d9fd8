"""MLflow experiment tracking for uno runs (rank 0 only, sqlite by default).

:class:`UnoMLflowVisBackend` is an mmengine vis backend that files each run
of a config under the experiment named by the config's folder below
``configs/`` and the run named by the config's stem. It logs an allow-list
of hyper-parameters (not the whole config), the resolved config, the
scalars of ``LoggerHook`` and one image file per step, and it continues the
same MLflow run when training resumes. Unlike mmengine's
``MLflowVisBackend`` it uses ``MlflowClient`` with explicit run ids instead
of the global active run, defaults to a sqlite store in the work-dirs root,
and never stops training: the first MLflow error is reported once, then the
backend switches itself off and ``LocalVisBackend`` keeps the local log.
"""
import contextlib
import logging
import math
import os
import os.path as osp
import re
import shlex
import socket
import subprocess
import time
from collections.abc import Mapping
from typing import Any, Optional, Sequence
from urllib.parse import urlsplit

import numpy as np
from mmengine.dist import get_rank
from mmengine.logging import print_log
from mmengine.visualization.vis_backend import BaseVisBackend, force_init_env

from uno.registry import VISBACKENDS
from uno.utils.paths import config_identity
from uno.version import __version__

try:
    import fcntl
except ImportError:  # Windows: no inter-process lock of the store
    fcntl = None

#: Dotted config keys logged as params, besides ``objectives.<name>.weight``.
DEFAULT_PARAM_KEYS = ('model.metaquery.num_queries',
                      'optim_wrapper.optimizer.lr',
                      'optim_wrapper.optimizer.type',
                      'train_dataloader.batch_size', 'train_cfg.max_iters',
                      'randomness.seed', 'launcher', 'strategy.type')
#: File in the work dir that holds the run id, read back on resume.
RUN_ID_FILE = 'mlflow_run_id.txt'
# LoggerHook's counters: MLflow stores the step of every metric anyway
_SKIPPED_SCALARS = frozenset({'iter', 'epoch'})
# characters MLflow 3 rejects in a metric name (the whole batch would fail)
_BAD_KEY_CHARS = re.compile(r'[^\w\-. :/]')
_announced_uris = set()  # print the store and `mlflow ui` once per process
#: MLflow's HTTP client waits 120 s per request and retries 7 times with
#: exponential backoff (minutes before a dead server is noticed); uno
#: bounds both unless the user set them (a remote server only: sqlite and
#: file stores make no requests)
HTTP_DEFAULTS = {'MLFLOW_HTTP_REQUEST_TIMEOUT': '10',
                 'MLFLOW_HTTP_REQUEST_MAX_RETRIES': '2',
                 'MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR': '1'}


def work_dirs_root(work_dir: str) -> str:
    """Where the default store lives: ``work_dir`` up to and including its
    last ``work_dirs`` component, or ``work_dir`` itself if it has none."""
    parts = osp.abspath(work_dir).split(osp.sep)
    if 'work_dirs' not in parts:
        return osp.abspath(work_dir)
    idx = len(parts) - 1 - parts[::-1].index('work_dirs')
    return osp.sep.join(parts[:idx + 1])


def git_commit() -> str:
    """Short sha of ``HEAD`` in the current directory, or ``'unknown'``."""
    try:
        out = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'],
                             capture_output=True,
                             text=True,
                             timeout=10)
        sha = out.stdout.strip()
        return sha if out.returncode == 0 and sha else 'unknown'
    except Exception:  # no git, not a repository, timeout: never fail
        return 'unknown'


def collect_params(cfg: Mapping, extra_keys: Sequence[str] = ()) -> dict:
    """Flatten the allow-listed keys of a config into MLflow params.

    Args:
        cfg (Mapping): The config as a nested dict.
        extra_keys (Sequence[str]): More dotted keys to log. Defaults to ().

    Returns:
        dict: ``{dotted key: value as str}`` for the keys that exist.
    """
    objectives = cfg.get('objectives')
    keys = [
        f'objectives.{name}.weight' for name, obj in objectives.items()
        if isinstance(obj, Mapping) and 'weight' in obj
    ] if isinstance(objectives, Mapping) else []
    params = {}
    for key in keys + list(DEFAULT_PARAM_KEYS) + list(extra_keys):
        node: Any = cfg
        for part in key.split('.'):
            if not isinstance(node, Mapping) or part not in node:
                break
            node = node[part]
        else:
            params[key] = str(node)[:6000]  # MLflow's limit on a value
    return params


def _to_float(value: Any) -> Optional[float]:
    """``value`` as a finite float, or None if it is not one."""
    if isinstance(value, (str, bytes)):
        return None
    try:  # .item(): one-element tensors and arrays, numpy scalars
        value = float(value.item() if hasattr(value, 'item') else value)
    except (TypeError, ValueError, RuntimeError):
        return None
    return value if math.isfinite(value) else None


def _sqlite_path(uri: str) -> Optional[str]:
    """The database file of a ``sqlite:///`` URI, else None."""
    path = uri[len('sqlite:///'):].split('?')[0]
    return path if uri.startswith('sqlite:///') and path not in (
        '', ':memory:') else None


@contextlib.contextmanager
def _store_lock(uri: str):
    """Serialise the processes that open one sqlite store.

    Runs started together (a sweep) race in MLflow's schema migrations of a
    new database, which leaves it broken for good, and in creating the same
    experiment; a lock file next to the database orders them.
    """
    path = _sqlite_path(uri)
    if path is None or fcntl is None:
        yield
        return
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path + '.lock', 'a') as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released on close, or if we die
        yield


def _log(msg: str, level: int = logging.WARNING) -> None:
    print_log(msg, logger='current', level=level)


def _safe_name(name: str) -> str:
    """A file-safe version of an image name (extension dropped)."""
    name = re.sub(r'\.(png|jpe?g)$', '', str(name), flags=re.IGNORECASE)
    return re.sub(r'[^A-Za-z0-9._-]+', '_', name).strip('._') or 'image'


@VISBACKENDS.register_module()
class UnoMLflowVisBackend(BaseVisBackend):
    """Log a run to MLflow: names from the config path, allow-listed params.

    Nothing talks to MLflow before the first record: :meth:`add_config`
    (called once by the Runner) creates or resumes the run; without a
    config the first scalar or image creates one in experiment
    ``'default'``. Only rank 0 logs; other ranks are inert. The first
    MLflow error is reported once as a warning, then every method is a
    no-op for the rest of the process.

    Args:
        save_dir (str, optional): Set by the Visualizer to
            ``<work_dir>/<timestamp>/vis_data``; gives the work dir when
            the config has none. Defaults to None.
        tracking_uri (str, optional): The MLflow store. Defaults to env
            ``MLFLOW_TRACKING_URI`` if set, else
            ``sqlite:///<work-dirs root>/mlflow.db``.
        experiment_name (str, optional): Defaults to the config's folder
            below ``configs/``, e.g. ``'ablations/metaquery_count'``.
        run_name (str, optional): Defaults to the config's stem.
        extra_params (Sequence[str]): Dotted config keys to log as params
            besides the objective weights and :data:`DEFAULT_PARAM_KEYS`.
            Defaults to ().
        tags (dict, optional): Extra run tags. Defaults to None.
        artifact_location (str, optional): Artifact root of experiments
            this backend creates. Defaults to ``<db folder>/mlartifacts/
            <experiment>`` for sqlite stores, else the server's choice.
    """

    def __init__(self,
                 save_dir: Optional[str] = None,
                 tracking_uri: Optional[str] = None,
                 experiment_name: Optional[str] = None,
                 run_name: Optional[str] = None,
                 extra_params: Sequence[str] = (),
                 tags: Optional[dict] = None,
                 artifact_location: Optional[str] = None):
        super().__init__(save_dir)
        self._uri_arg = tracking_uri
        self._experiment_name = experiment_name
        self._run_name = run_name
        self._extra_params = tuple(extra_params)
        self._tags = dict(tags or {})
        self._artifact_location = artifact_location
        self._cfg = self._client = self._uri = None
        self._experiment_id: Optional[str] = None
        self._run_id: Optional[str] = None
        self._resumed = self._inert = self._disabled = False

    @property
    def tracking_uri(self) -> str:
        """The MLflow store in use (before the run: the one it would use)."""
        return self._uri or self._resolve_uri()

    @property
    def experiment_id(self) -> Optional[str]:
        """The MLflow experiment id, None before the run exists."""
        return self._experiment_id

    @property
    def run_id(self) -> Optional[str]:
        """The MLflow run id, None before the run exists or when off."""
        return self._run_id

    @property  # type: ignore
    @force_init_env
    def experiment(self):
        """The run's ``MlflowClient`` (use it with :attr:`run_id`), or None
        on ranks other than 0 and after an MLflow error."""
        return self._client if self._ensure_run() else None

    def _init_env(self) -> None:
        """Decide whether this process logs; nothing is opened yet."""
        env_rank = os.environ.get('RANK', os.environ.get('LOCAL_RANK', '0'))
        self._inert = get_rank() != 0 or env_rank.strip() not in ('', '0')
        os.environ.setdefault('MLFLOW_DISABLE_TELEMETRY', 'true')
        for key, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)

    def _work_dir(self) -> Optional[str]:
        if self._cfg is not None and self._cfg.get('work_dir'):
            return osp.abspath(self._cfg.get('work_dir'))
        if not self._save_dir:
            return None
        path = osp.abspath(self._save_dir)
        # the Runner's save_dir is <work_dir>/<timestamp>/vis_data
        is_vis_data = osp.basename(path) == 'vis_data'
        return osp.dirname(osp.dirname(path)) if is_vis_data else path

    def _resolve_uri(self) -> str:
        uri = self._uri_arg or os.environ.get('MLFLOW_TRACKING_URI')
        if uri:
            return uri
        root = work_dirs_root(self._work_dir() or 'work_dirs')
        return 'sqlite:///' + osp.join(root, 'mlflow.db')

    def _ensure_run(self) -> bool:
        """Open the store and create or resume the run, once."""
        if self._run_id is None and not (self._inert or self._disabled):
            try:
                self._start_run()
            except Exception as exc:  # never let tracking stop training
                self._disable(exc)
        return self._run_id is not None

    def _start_run(self) -> None:
        from mlflow import MlflowClient

        uri = self._uri = self._resolve_uri()  # MLflow makes sqlite's folder
        if uri.startswith(('http://', 'https://')):
            # MLflow retries an unreachable server for minutes per call
            parts = urlsplit(uri)
            port = parts.port or (443 if parts.scheme == 'https' else 80)
            socket.create_connection((parts.hostname, port), timeout=5).close()
        ident = config_identity(self._cfg.filename if self._cfg else None)
        exp_name = self._experiment_name or ident.experiment
        with _store_lock(uri):
            client = MlflowClient(tracking_uri=uri)
            exp = client.get_experiment_by_name(exp_name)
            exp_id = exp.experiment_id if exp is not None else \
                client.create_experiment(
                    exp_name, artifact_location=self._artifact_root(exp_name))
            run_id = self._resumable_run_id(client)
            self._resumed = run_id is not None
            if self._resumed:
                client.update_run(run_id, status='RUNNING')
            else:
                run_name = self._run_name or (ident.run_name
                                              if self._cfg else None)
                run_id = client.create_run(
                    exp_id, run_name=run_name).info.run_id
        tags = dict(git_commit=git_commit(), uno_version=__version__)
        if self._cfg is not None and self._cfg.filename:
            tags['config_path'] = str(self._cfg.filename)
        work_dir = self._work_dir()
        if work_dir:
            tags['work_dir'] = work_dir
            os.makedirs(work_dir, exist_ok=True)
            with open(osp.join(work_dir, RUN_ID_FILE), 'w') as f:
                f.write(run_id + '\n')
        self._client, self._experiment_id = client, exp_id
        self._run_id = run_id
        self._log_tags({**tags, **self._tags})
        if uri not in _announced_uris:
            _announced_uris.add(uri)
            _log(
                f"MLflow run {run_id} of experiment '{exp_name}' in {uri}. "
                'Browse it with: mlflow ui --backend-store-uri '
                f'{shlex.quote(uri)}', logging.INFO)

    def _artifact_root(self, exp_name: str) -> Optional[str]:
        # MLflow's default for a sqlite store is ./mlruns below the *cwd*
        db_path = _sqlite_path(self._uri)
        if self._artifact_location or db_path is None:
            return self._artifact_location
        db_dir = osp.dirname(osp.abspath(db_path))
        parts = [_safe_name(p) for p in exp_name.split('/') if p]
        return osp.join(db_dir, 'mlartifacts', *parts)

    def _resumable_run_id(self, client) -> Optional[str]:
        """The run recorded in the work dir, when the config resumes."""
        work_dir = self._work_dir()
        path = osp.join(work_dir or '', RUN_ID_FILE)
        if not (self._cfg is not None and self._cfg.get('resume') and work_dir
                and osp.isfile(path)):
            return None
        if not (self._cfg.get('load_from')
                or osp.isfile(osp.join(work_dir, 'last_checkpoint'))):
            # mmengine restarts from iteration 0 when it finds no
            # checkpoint; continuing the old run would log steps twice
            return None
        with open(path) as f:
            run_id = f.read().strip()
        from mlflow.exceptions import MlflowException
        try:
            run = client.get_run(run_id)
        except MlflowException:  # it was recorded in another store
            _log(
                f'MLflow run {run_id} of {path} is not in {self._uri}; '
                'starting a new run.', logging.INFO)
            return None
        return run_id if run.info.lifecycle_stage == 'active' else None

    def _disable(self, exc: BaseException) -> None:
        """Warn once with the reason and stop all further MLflow calls."""
        if self._disabled:
            return
        self._disabled, self._run_id = True, None
        reason = (str(exc).strip().splitlines() or [''])[0][:300]
        _log(f'UnoMLflowVisBackend: MLflow tracking is off for the rest of '
             f'this process ({type(exc).__name__}: {reason}; store '
             f'{self._uri or self._uri_arg}). Training continues and '
             'LocalVisBackend keeps the local log.')

    def _call(self, fn, *args) -> None:
        """Run ``fn(*args)`` once the run exists; an error disables."""
        if self._ensure_run():
            try:
                fn(*args)
            except Exception as exc:
                self._disable(exc)

    @force_init_env
    def add_config(self, config, **kwargs) -> None:
        """Create (or resume) the run; log params and ``config.py``.

        Args:
            config (Config): The resolved config; ``filename``,
                ``work_dir`` and ``resume`` are read from it.
        """
        if not self._inert:
            self._cfg = config
            self._call(self._log_config, config)

    def _log_config(self, config) -> None:
        from mlflow.entities import Param
        params = collect_params(config.to_dict(), self._extra_params)
        if self._resumed:
            # a param cannot change its value within a run: keep the first
            logged = self._client.get_run(self._run_id).data.params
            changed = sorted(k for k, v in params.items()
                             if logged.get(k, v) != v)
            if changed:
                _log(f'MLflow run {self._run_id} keeps its first values '
                     f'of {changed} on resume.')
            params = {k: v for k, v in params.items() if k not in logged}
        if params:
            self._client.log_batch(
                self._run_id, params=[Param(k, v) for k, v in params.items()])
        try:
            text = config.pretty_text
        except Exception:  # yapf cannot format every config
            text = config.text
        self._client.log_text(self._run_id, text, 'config.py')

    @force_init_env
    def add_scalar(self,
                   name: str,
                   value: Any,
                   step: int = 0,
                   **kwargs) -> None:
        """Log one metric at ``step``, as :meth:`add_scalars` does."""
        self.add_scalars({name: value}, step)

    @force_init_env
    def add_scalars(self,
                    scalar_dict: dict,
                    step: int = 0,
                    file_path: Optional[str] = None,
                    **kwargs) -> None:
        """Log metrics at ``step`` with their names as given.

        ``iter`` and ``epoch`` (LoggerHook's counters) and non-numeric or
        non-finite values are skipped; characters MLflow rejects in a name
        become ``_``.

        Args:
            scalar_dict (dict): ``{name: value}``.
            step (int): Global step. Defaults to 0.
            file_path (str, optional): Unused. Defaults to None.
        """
        if self._inert or self._disabled:
            return
        metrics = {}
        for name, value in scalar_dict.items():
            number = _to_float(value)
            if name not in _SKIPPED_SCALARS and number is not None:
                metrics[_BAD_KEY_CHARS.sub('_', str(name))[:250]] = number
        if metrics:
            self._call(self._log_metrics, metrics, int(step))

    def _log_metrics(self, metrics: dict, step: int) -> None:
        from mlflow.entities import Metric
        stamp = int(time.time() * 1000)
        self._client.log_batch(
            self._run_id,
            metrics=[Metric(k, v, stamp, step) for k, v in metrics.items()])

    @force_init_env
    def add_image(self,
                  name: str,
                  image: np.ndarray,
                  step: int = 0,
                  **kwargs) -> None:
        """Save ``image`` as the run's ``images/<name>_step<step>.png``.

        Args:
            name (str): Image name; made file-safe.
            image (np.ndarray): RGB ``(H, W, 3)`` uint8 (mmengine's
                convention); other dtypes are clipped to [0, 255].
            step (int): Global step; each step keeps its own file.
                Defaults to 0.
        """
        if self._inert or self._disabled:
            return
        image = np.asarray(image)
        if not (image.ndim == 2
                or image.ndim == 3 and image.shape[2] in (1, 3, 4)):
            _log(f'UnoMLflowVisBackend: image {name!r} has shape '
                 f'{image.shape}, not (H, W[, C]); skipped.')
            return
        if image.dtype != np.uint8:
            image = np.clip(image, 0, 255).astype(np.uint8)
        path = f'images/{_safe_name(name)}_step{int(step)}.png'
        self._call(lambda: self._client.log_image(
            self._run_id, image, artifact_file=path))

    @force_init_env
    def set_tags(self, tags: dict) -> None:
        """Set or overwrite run tags, e.g. the checkpoint evaluated.

        Args:
            tags (dict): ``{name: value}``; values are logged as str.
        """
        if not (self._inert or self._disabled or not tags):
            self._call(self._log_tags, tags)

    def _log_tags(self, tags: dict) -> None:
        from mlflow.entities import RunTag
        entries = [RunTag(str(k), str(v)[:5000]) for k, v in tags.items()]
        self._client.log_batch(self._run_id, tags=entries)

    def close(self, status: str = 'FINISHED') -> None:
        """Mark the run ``status`` (``'FAILED'`` when the run died of an
        error); a no-op without one (other ranks, off, nothing logged).
        Later records still reach the run."""
        if not (self._inert or self._disabled or self._run_id is None):
            self._call(self._client.set_terminated, self._run_id, status)
