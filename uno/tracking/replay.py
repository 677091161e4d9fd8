"""Push a run's local log into MLflow after MLflow was unavailable.

When the store fails, :class:`~uno.tracking.UnoMLflowVisBackend` switches
itself off and ``LocalVisBackend`` keeps the log of each start of the run
in ``<work_dir>/<timestamp>/vis_data/``: ``scalars.json`` (one JSON object
per logged step, with its ``step``), ``config.py`` and ``vis_image/``.
:func:`replay_work_dir` sends them to MLflow as the backend would have:

* the experiment and run names come from the config's path
  (:func:`~uno.utils.paths.config_identity`) when it is given; otherwise
  the run is named after the config the Runner dumped into the work dir
  (``<work_dir>/<config stem>.py``) and the experiment after the work
  dir's folders below ``work_dirs/`` (what ``tools/train.py``'s default
  work dir, ``work_dirs/<config path below configs/>``, gives back). The
  ``experiment_name``, ``run_name``, ``extra_params``, ``tags``,
  ``tracking_uri`` and ``artifact_location`` of the config's
  ``UnoMLflowVisBackend`` apply as they do in training;
* params are the backend's allow-list (:func:`collect_params`), metrics
  keep their steps and are filtered and renamed by the backend's rules,
  the dumped config becomes the ``config.py`` artifact and the images
  ``images/<name>_step<step>.png``;
* the run id is written to ``<work_dir>/mlflow_run_id.txt``, so a later
  ``--resume`` continues the run. If that file already names a run of the
  store, the replay continues it and skips the (metric, step) pairs and
  params it already has: a second replay adds nothing, and a run whose
  store failed half-way gets only what it missed.

Every timestamp folder is replayed in order. Unlike the backend, the
replay raises on an MLflow error: it runs when the store is back.
"""
import glob
import json
import os
import os.path as osp
import shutil
import tempfile
from collections.abc import Mapping
from datetime import datetime
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from mmengine.config import Config

from uno.utils.paths import ConfigIdentity, config_identity
from uno.version import __version__
from .mlflow_backend import (_BAD_KEY_CHARS, _SKIPPED_SCALARS, RUN_ID_FILE,
                             _safe_name, _sqlite_path, _store_lock,
                             _to_float, collect_params, work_dirs_root)

_METRICS_PER_BATCH = 1000  # MLflow's limits per log_batch call
_PARAMS_PER_BATCH = 100
_BACKEND = 'UnoMLflowVisBackend'
_LOCAL = 'LocalVisBackend'


class ReplayResult(NamedTuple):
    """What :func:`replay_work_dir` sent where."""
    run_id: str
    experiment: str
    run_name: str
    tracking_uri: str
    num_metrics: int  # metric values logged (already present: skipped)
    num_logs: int  # timestamp folders replayed
    continued: bool  # the run of mlflow_run_id.txt was continued


class LocalLog(NamedTuple):
    """One start of a run: ``<work_dir>/<timestamp>/vis_data``."""
    vis_dir: str
    scalars: str  # path of the scalars file
    start_ms: int  # when that start began (ms since the epoch)


def find_logs(work_dir: str,
              scalar_file: str = 'scalars.json') -> List[LocalLog]:
    """The local logs of ``work_dir``, oldest first.

    Args:
        work_dir (str): The run's work dir.
        scalar_file (str): File name of ``LocalVisBackend``'s scalars.
            Defaults to ``'scalars.json'``.

    Returns:
        list[LocalLog]: One per ``<timestamp>/vis_data/<scalar_file>``.
    """
    logs = []
    pattern = osp.join(glob.escape(work_dir), '*', 'vis_data', scalar_file)
    for path in sorted(glob.glob(pattern)):
        vis_dir = osp.dirname(path)
        stamp = osp.basename(osp.dirname(vis_dir))
        try:
            start = datetime.strptime(stamp, '%Y%m%d_%H%M%S').timestamp()
        except ValueError:  # not a Runner timestamp: its file's time
            start = osp.getmtime(path)
        logs.append(LocalLog(vis_dir, path, int(start * 1000)))
    return sorted(logs, key=lambda log: (log.start_ms, log.vis_dir))


def find_config(work_dir: str) -> Optional[str]:
    """The newest dumped config: ``<timestamp>/vis_data/config.py`` of the
    last start that has one, else the newest ``<work_dir>/*.py``."""
    pattern = osp.join(glob.escape(work_dir), '*', 'vis_data', 'config.py')
    found = sorted(glob.glob(pattern))
    if found:
        return found[-1]
    dumped = _dumped_configs(work_dir)
    return dumped[-1] if dumped else None


def read_scalars(path: str) -> List[Tuple[int, Dict[str, float]]]:
    """``(step, metrics)`` of each line of a ``scalars.json``.

    Metrics are filtered and renamed as :class:`UnoMLflowVisBackend`
    does: ``iter`` and ``epoch`` and non-numeric or non-finite values are
    dropped, characters MLflow rejects become ``_``. A line that is not
    JSON (the last one of a killed run) is skipped.
    """
    rows = []
    with open(path) as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if not isinstance(record, dict):
                continue
            step = int(_to_float(record.pop('step', 0)) or 0)
            metrics = {}
            for name, value in record.items():
                number = _to_float(value)
                if name not in _SKIPPED_SCALARS and number is not None:
                    metrics[_BAD_KEY_CHARS.sub('_', str(name))[:250]] = number
            if metrics:
                rows.append((step, metrics))
    return rows


def replay_identity(work_dir: str,
                    config: Optional[str] = None) -> ConfigIdentity:
    """The experiment and run names of the run logged in ``work_dir``.

    Args:
        work_dir (str): The run's work dir.
        config (str, optional): The config's original path; gives the
            names exactly as in training. Defaults to None: the run name
            is the stem of the config dumped into the work dir, the
            experiment the work dir's folders below ``work_dirs/``
            without that stem (``'default'`` outside ``work_dirs/``).
    """
    if config:
        return config_identity(config)
    dumped = _dumped_configs(work_dir)
    if not dumped:
        return config_identity(None)
    stem = osp.splitext(osp.basename(dumped[-1]))[0]
    parts = osp.abspath(work_dir).split(osp.sep)
    rel = []
    if 'work_dirs' in parts:
        rel = parts[len(parts) - parts[::-1].index('work_dirs'):]
        if rel and rel[-1] == stem:
            rel = rel[:-1]
    return config_identity(osp.join('configs', *rel, stem + '.py'))


def replay_work_dir(work_dir: str,
                    tracking_uri: Optional[str] = None,
                    config: Optional[str] = None,
                    experiment_name: Optional[str] = None,
                    run_name: Optional[str] = None) -> ReplayResult:
    """Replay the local log of ``work_dir`` into an MLflow run.

    Args:
        work_dir (str): The run's work dir.
        tracking_uri (str, optional): The store. Defaults to the config's
            backend argument, else env ``MLFLOW_TRACKING_URI``, else
            ``sqlite:///<work-dirs root>/mlflow.db``, as in training.
        config (str, optional): The config's original path, for the
            experiment and run names (see :func:`replay_identity`).
            Defaults to None.
        experiment_name (str, optional): Overrides the experiment name.
            Defaults to None.
        run_name (str, optional): Overrides the run name (of a new run).
            Defaults to None.

    Returns:
        ReplayResult: The run and what was logged.

    Raises:
        FileNotFoundError: When ``work_dir`` has no local log.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    work_dir = osp.abspath(work_dir)
    cfg_path = find_config(work_dir)
    cfg = Config.fromfile(cfg_path) if cfg_path else Config()
    args = _backend_args(cfg, _BACKEND)
    local = _backend_args(cfg, _LOCAL)
    logs = find_logs(work_dir, local.get('scalar_save_file', 'scalars.json'))
    if not logs:
        raise FileNotFoundError(
            f'no local log in {work_dir}: expected <timestamp>/vis_data/'
            'scalars.json below it (is it a work dir?)')
    ident = replay_identity(work_dir, config)
    exp_name = experiment_name or args.get('experiment_name') or \
        ident.experiment
    name = run_name or args.get('run_name') or ident.run_name
    uri = (tracking_uri or args.get('tracking_uri')
           or os.environ.get('MLFLOW_TRACKING_URI')
           or 'sqlite:///' + osp.join(work_dirs_root(work_dir), 'mlflow.db'))

    with _store_lock(uri):
        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name(exp_name)
        exp_id = exp.experiment_id if exp is not None else \
            client.create_experiment(
                exp_name,
                artifact_location=_artifact_root(
                    uri, exp_name, args.get('artifact_location')))
        run_id = _recorded_run(client, work_dir, MlflowException)
        continued = run_id is not None
        if not continued:
            run_id = client.create_run(
                exp_id, start_time=logs[0].start_ms,
                run_name=name).info.run_id
    with open(osp.join(work_dir, RUN_ID_FILE), 'w') as f:
        f.write(run_id + '\n')

    tags = dict(uno_version=__version__, work_dir=work_dir,
                replayed_from=work_dir)
    if config:
        tags['config_path'] = str(config)
    tags.update({str(k): v for k, v in (args.get('tags') or {}).items()})
    _log_tags(client, run_id, tags)
    _log_params(client, run_id,
                collect_params(cfg.to_dict(), args.get('extra_params', ())))
    if cfg_path:
        with open(cfg_path) as f:
            client.log_text(run_id, f.read(), 'config.py')
    num = _log_metrics(client, run_id, logs, skip_logged=continued)
    _log_images(client, run_id, logs, local.get('img_save_dir', 'vis_image'))
    end_ms = int(max(osp.getmtime(log.scalars) for log in logs) * 1000)
    client.set_terminated(run_id, 'FINISHED', end_time=end_ms)
    return ReplayResult(run_id, exp_name, name, uri, num, len(logs),
                        continued)


def _dumped_configs(work_dir: str) -> List[str]:
    """``<work_dir>/*.py`` (what the Runner dumps), oldest first."""
    return sorted(glob.glob(osp.join(glob.escape(work_dir), '*.py')),
                  key=osp.getmtime)


def _backend_args(cfg: Config, type_name: str) -> dict:
    """Arguments of the config's vis backend of type ``type_name``."""
    visualizer = cfg.get('visualizer') or {}
    backends = visualizer.get('vis_backends') or [] if isinstance(
        visualizer, Mapping) else []
    for backend in backends:
        if not isinstance(backend, Mapping):
            continue
        kind = backend.get('type')
        kind = kind if isinstance(kind, str) else getattr(kind, '__name__', '')
        if kind.rsplit('.', 1)[-1] == type_name:
            return {k: v for k, v in backend.items() if k != 'type'}
    return {}


def _artifact_root(uri: str, exp_name: str,
                   location: Optional[str]) -> Optional[str]:
    """Where a new experiment keeps its artifacts, as in the backend."""
    db_path = _sqlite_path(uri)
    if location or db_path is None:
        return location
    db_dir = osp.dirname(osp.abspath(db_path))
    parts = [_safe_name(p) for p in exp_name.split('/') if p]
    return osp.join(db_dir, 'mlartifacts', *parts)


def _recorded_run(client, work_dir: str, not_found) -> Optional[str]:
    """The active run of ``<work_dir>/mlflow_run_id.txt`` in this store."""
    path = osp.join(work_dir, RUN_ID_FILE)
    if not osp.isfile(path):
        return None
    with open(path) as f:
        run_id = f.read().strip()
    try:
        run = client.get_run(run_id)
    except not_found:  # recorded in another store
        return None
    return run_id if run.info.lifecycle_stage == 'active' else None


def _log_tags(client, run_id: str, tags: dict) -> None:
    from mlflow.entities import RunTag
    client.log_batch(
        run_id, tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()])


def _log_params(client, run_id: str, params: dict) -> None:
    """Log the params the run does not have (a param cannot change)."""
    from mlflow.entities import Param
    logged = client.get_run(run_id).data.params
    new = [Param(k, v) for k, v in params.items() if k not in logged]
    for i in range(0, len(new), _PARAMS_PER_BATCH):
        client.log_batch(run_id, params=new[i:i + _PARAMS_PER_BATCH])


def _log_metrics(client, run_id: str, logs: Sequence[LocalLog],
                 skip_logged: bool) -> int:
    """Log every (metric, step) of ``logs``; with ``skip_logged``, not the
    pairs the run already has. Returns the number of values logged."""
    from mlflow.entities import Metric
    metrics = []
    for log in logs:
        for step, values in read_scalars(log.scalars):
            metrics += [
                Metric(k, v, log.start_ms, step) for k, v in values.items()
            ]
    if skip_logged:
        seen = {}
        for key in {m.key for m in metrics}:
            seen[key] = {
                m.step
                for m in client.get_metric_history(run_id, key)
            }
        metrics = [m for m in metrics if m.step not in seen[m.key]]
    for i in range(0, len(metrics), _METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=metrics[i:i + _METRICS_PER_BATCH])
    return len(metrics)


def _log_images(client, run_id: str, logs: Sequence[LocalLog],
                img_dir: str) -> None:
    """Upload ``vis_image/<name>_<step>.png`` as the backend names them,
    ``images/<name>_step<step>.png``, unless the run has the file."""
    present = {
        osp.basename(a.path)
        for a in client.list_artifacts(run_id, 'images')
    }
    with tempfile.TemporaryDirectory() as tmp:
        for log in logs:
            for path in sorted(glob.glob(osp.join(
                    glob.escape(osp.join(log.vis_dir, img_dir)), '*.png'))):
                name, _, step = osp.basename(path)[:-len('.png')].rpartition(
                    '_')
                if not (name and step.isdigit()):
                    continue
                target = f'{_safe_name(name)}_step{int(step)}.png'
                if target not in present:
                    shutil.copy(path, osp.join(tmp, target))
        if os.listdir(tmp):
            client.log_artifacts(run_id, tmp, artifact_path='images')
