"""MLflow tracking of uno runs (design: docs/tracking.md)."""
import fcntl
import logging
import math
import os
import os.path as osp
import re
import shlex
import time
from collections.abc import Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Optional, Sequence

from mmengine.dist import get_rank
from mmengine.logging import print_log
from mmengine.visualization.vis_backend import BaseVisBackend, force_init_env

from uno.registry import VISBACKENDS
from uno.utils.paths import config_identity, work_dirs_root
from uno.version import __version__

#: Dotted config keys logged as params, besides ``objectives.<name>.weight``.
DEFAULT_PARAM_KEYS = (
    'model.metaquery.num_queries', 'optim_wrapper.optimizer.lr',
    'optim_wrapper.optimizer.type', 'train_dataloader.batch_size',
    'train_cfg.max_iters', 'randomness.seed', 'launcher', 'strategy.type')
#: The work dir's record of its run, continued on resume.
RUN_ID_FILE = 'mlflow_run_id.txt'
#: Bounds on a server's requests (MLflow's own: minutes to notice it died).
HTTP_DEFAULTS = {'MLFLOW_HTTP_REQUEST_TIMEOUT': '10',
                 'MLFLOW_HTTP_REQUEST_MAX_RETRIES': '2',
                 'MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR': '1'}


def bound_http_requests() -> None:
    """Set the :data:`HTTP_DEFAULTS` that the user has not set."""
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)


def collect_params(cfg: Mapping, extra_keys: Sequence[str] = ()) -> dict:
    """The allow-listed ``{dotted key: str(value)}`` that ``cfg`` sets."""
    weights = [f'objectives.{k}.weight' for k in cfg.get('objectives') or {}]
    params = {}
    for key in [*weights, *DEFAULT_PARAM_KEYS, *extra_keys]:
        node = cfg
        for part in key.split('.'):
            node = node.get(part) if isinstance(node, Mapping) else None
        if node is not None:
            params[key] = str(node)
    return params


def clean_metrics(values: Mapping) -> dict:
    """The finite numbers of ``values`` but ``iter``, ``epoch``."""
    metrics = {}
    for name, value in values.items():
        with suppress(TypeError, ValueError):
            number = math.nan if isinstance(value, str) else float(value)
            if name not in ('iter', 'epoch') and math.isfinite(number):
                metrics[re.sub(r'[^\w\-. :/]', '_', str(name))] = number
    return metrics


def image_artifact(name: str, step) -> str:
    """``images/<name>_step<step>.png``, ``name`` made file-safe."""
    name = re.sub(r'\.(png|jpe?g)$', '', name, flags=re.IGNORECASE)
    name = re.sub(r'[^A-Za-z0-9._-]+', '_', name).strip('._') or 'image'
    return f'images/{name}_step{int(step)}.png'


@contextmanager
def _store_lock(uri: str):
    """Lock a sqlite store (migrations race); yield its path or None."""
    if not uri.startswith('sqlite:///'):
        yield None
        return
    db = osp.abspath(uri[len('sqlite:///'):].split('?')[0])
    os.makedirs(osp.dirname(db), exist_ok=True)
    with open(db + '.lock', 'a') as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released on close, or if we die
        yield db


@VISBACKENDS.register_module()
class UnoMLflowVisBackend(BaseVisBackend):
    """Log a run to MLflow: names from the config path, allow-listed params.

    Args:
        save_dir (str, optional): The work dir or its ``vis_data`` folder.
        tracking_uri (str, optional): Defaults to ``MLFLOW_TRACKING_URI``,
            else ``sqlite:///<work-dirs root>/mlflow.db``.
        experiment_name, run_name (str, optional): Default to the config's
            folder and stem.
        extra_params (Sequence[str]): More dotted config keys to log.
        tags (dict, optional): Extra run tags.
        artifact_location (str, optional): Of a new experiment; defaults
            to ``mlartifacts/<experiment>`` next to a sqlite store.
    """

    def __init__(self, save_dir: Optional[str] = None,
                 tracking_uri: Optional[str] = None,
                 experiment_name: Optional[str] = None,
                 run_name: Optional[str] = None,
                 extra_params: Sequence[str] = (),
                 tags: Optional[dict] = None,
                 artifact_location: Optional[str] = None):
        super().__init__(save_dir)
        self._uri, self._artifact_location = tracking_uri, artifact_location
        self._experiment_name, self._run_name = experiment_name, run_name
        self._extra_params, self._tags = extra_params, tags or {}
        self._cfg = self.client = self.experiment_id = self.run_id = None
        self._off = False  # another rank, or MLflow failed

    @property
    def tracking_uri(self) -> str:
        """The store in use (before the run: the one it would use)."""
        return self._uri or os.environ.get('MLFLOW_TRACKING_URI') or \
            f"sqlite:///{work_dirs_root(self._work_dir() or '.')}/mlflow.db"

    @property  # type: ignore
    @force_init_env
    def experiment(self):
        """The ``MlflowClient`` of :attr:`run_id`; None when off."""
        self._safely()
        return self.client if self.run_id else None

    def _init_env(self) -> None:
        self._off = get_rank() != 0 or os.environ.get('RANK', '0') != '0'
        os.environ.setdefault('MLFLOW_DISABLE_TELEMETRY', 'true')
        bound_http_requests()

    def _work_dir(self) -> Optional[str]:
        path = (self._cfg or {}).get('work_dir') or self._save_dir
        path = path and osp.abspath(path)
        return osp.dirname(osp.dirname(path)) if path and osp.basename(
            path) == 'vis_data' else path

    def _safely(self, **parts) -> None:
        """Start the run once, log ``parts``; an error turns MLflow off."""
        if self._off:
            return
        try:
            if self.run_id is None:
                self._start_run()
            self._log(**parts)
        except Exception as exc:
            self._off, self.run_id = True, None
            print_log(
                'UnoMLflowVisBackend: MLflow tracking is off for the rest of '
                f'this process ({type(exc).__name__}: '
                f"{' '.join(str(exc).split())[:300]}; store "
                f'{self.tracking_uri}). Training continues; replay the local '
                'log later: tools/misc/push_to_mlflow.py WORK_DIR', 'current',
                logging.WARNING)

    def _start_run(self, resume: Optional[bool] = None,
                   start_time: Optional[int] = None) -> bool:
        """Create, or with ``resume`` continue, the run; True if continued."""
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException
        from mlflow.utils.git_utils import get_git_commit
        cfg, work_dir = self._cfg or {}, self._work_dir()
        ident = config_identity(getattr(cfg, 'filename', None))
        id_file = Path(work_dir or '.', RUN_ID_FILE)
        if resume is None:
            resume = cfg.get('resume') and (cfg.get('load_from') or (
                id_file.parent / 'last_checkpoint').is_file())
        run_id = id_file.read_text().strip() \
            if resume and work_dir and id_file.is_file() else None
        self._uri = uri = self.tracking_uri
        with _store_lock(uri) as db:
            self.client = client = MlflowClient(uri)
            run = None
            with suppress(MlflowException):  # recorded in another store
                run = client.get_run(run_id) if run_id else None
            resumed = run is not None and run.info.lifecycle_stage == 'active'
            if resumed:
                self.experiment_id = run.info.experiment_id
                client.update_run(run_id, status='RUNNING')
            else:
                name = self._experiment_name or ident.experiment
                exp = client.get_experiment_by_name(name)
                self.experiment_id = exp.experiment_id if exp else \
                    client.create_experiment(name, self._artifact_location or (
                        db and osp.join(osp.dirname(db), 'mlartifacts', name)))
                run_id = client.create_run(
                    self.experiment_id, start_time,
                    run_name=self._run_name or ident.run_name).info.run_id
        self.run_id = run_id
        if work_dir:
            id_file.parent.mkdir(parents=True, exist_ok=True)
            id_file.write_text(run_id + '\n')
        git = (get_git_commit(os.getcwd()) or 'unknown') if self._cfg else None
        self._log(tags={'git_commit': git, 'uno_version': __version__,
                        'config_path': getattr(cfg, 'filename', None),
                        'work_dir': work_dir, **self._tags})
        print_log(f'MLflow run {run_id} in {uri}; browse it with: mlflow ui '
                  f'--backend-store-uri {shlex.quote(uri)}', 'current')
        return resumed

    def _log(self, params: Optional[Mapping] = None, metrics: Sequence = (),
             tags: Optional[Mapping] = None, config_text: Optional[str] = None,
             images: Optional[Mapping] = None,
             status: Optional[str] = None) -> None:
        """Log to the started run; params keep their first values."""
        from mlflow.entities import Param, RunTag
        client, run_id, params = self.client, self.run_id, params or {}
        logged = client.get_run(run_id).data.params if params else {}
        changed = sorted(k for k, v in logged.items() if params.get(k, v) != v)
        if changed:
            print_log(f'MLflow run {run_id} keeps its first values of '
                      f'{changed}', 'current', logging.WARNING)
        client.log_batch(
            run_id, metrics,
            [Param(k, v[:6000]) for k, v in params.items() if k not in logged],
            [RunTag(k, str(v)[:6000]) for k, v in (tags or {}).items()
             if v is not None])
        if config_text is not None:
            client.log_text(run_id, config_text, 'config.py')
        for path, image in (images or {}).items():
            client.log_image(run_id, image, artifact_file=path)
        if status:
            client.set_terminated(run_id, status)

    @force_init_env
    def add_config(self, config, **kwargs) -> None:
        """Start the run; log the params and the config as ``config.py``."""
        self._cfg = config
        self._safely(
            params=collect_params(config.to_dict(), self._extra_params),
            config_text=config.pretty_text)

    @force_init_env
    def add_scalars(self, scalar_dict: dict, step: int = 0,
                    file_path: Optional[str] = None, **kwargs) -> None:
        """Log the :func:`clean_metrics` of ``scalar_dict`` at ``step``."""
        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, int(step))
                   for k, v in clean_metrics(scalar_dict).items()]
        if metrics:
            self._safely(metrics=metrics)

    def add_scalar(self, name: str, value, step: int = 0, **kwargs) -> None:
        """Log one metric, as :meth:`add_scalars` does."""
        self.add_scalars({name: value}, step)

    @force_init_env
    def add_image(self, name: str, image, step: int = 0, **kwargs) -> None:
        """Log an RGB uint8 ``(H, W, 3)`` array as :func:`image_artifact`."""
        self._safely(images={image_artifact(name, step): image})

    @force_init_env
    def set_tags(self, tags: dict) -> None:
        """Set or overwrite run tags, e.g. the checkpoint evaluated."""
        self._safely(tags=tags)

    def close(self, status: str = 'FINISHED') -> None:
        """End the run with ``status`` (e.g. ``'FAILED'``)."""
        if self.run_id:
            self._safely(status=status)


def find_mlflow_backend(runner) -> Optional[UnoMLflowVisBackend]:
    """The runner's MLflow backend, under its default name, if any."""
    backend = runner.visualizer.get_backend(UnoMLflowVisBackend.__name__)
    return backend if isinstance(backend, UnoMLflowVisBackend) else None


def report_tracking(runner) -> None:
    """Print the work dir, the MLflow run and the command to browse it."""
    backend = find_mlflow_backend(runner)
    lines = [f'work dir: {runner.work_dir}']
    if backend and backend.run_id:
        uri = backend.tracking_uri
        lines += [f'MLflow tracking URI: {uri}',
                  f'MLflow run id: {backend.run_id}',
                  f'browse: mlflow ui --backend-store-uri {shlex.quote(uri)}']
    elif backend:
        lines.append('MLflow was unavailable; metrics are in the work '
                     "dir's vis_data/scalars.json")
    print_log('\n'.join(lines), logger='current')


def log_eval_metrics(runner, metrics: dict, checkpoint: str,
                     tags: Optional[dict] = None) -> None:
    """Log eval metrics at the runner's iteration, tag the checkpoint."""
    backend = find_mlflow_backend(runner)
    if backend:
        backend.add_scalars(metrics, step=runner.iter)
        backend.set_tags({'checkpoint': checkpoint,
                          'checkpoint_path': osp.abspath(checkpoint),
                          **(tags or {})})
