"""Replay a work dir's local log into MLflow (docs/tracking.md#replay)."""
import glob
import json
import os.path as osp
import time
from collections import namedtuple
from contextlib import suppress
from typing import Optional

from mmengine.config import Config

from uno.utils.paths import config_identity, work_dirs_root
from .mlflow_backend import (UnoMLflowVisBackend, bound_http_requests,
                             clean_metrics, collect_params, image_artifact)

#: What :func:`replay_work_dir` logged where (``num_logs``: starts read).
ReplayResult = namedtuple('ReplayResult', 'run_id experiment run_name '
                          'tracking_uri num_metrics num_logs continued')


def _files(work_dir: str, pattern: str) -> list:
    return sorted(glob.glob(osp.join(glob.escape(work_dir), pattern)))


def find_logs(work_dir: str) -> list:
    """The ``<timestamp>/vis_data`` folders with scalars, oldest first."""
    return [osp.dirname(path)
            for path in _files(work_dir, '*/vis_data/scalars.json')]


def read_scalars(path: str) -> list:
    """``[(step, metrics)]`` of a ``scalars.json``; torn lines skipped."""
    rows = []
    with open(path) as f:
        for line in f:
            with suppress(ValueError):
                record = json.loads(line)
                step = int(record.pop('step', 0))
                rows += [(step, clean_metrics(record))]
    return [(step, metrics) for step, metrics in rows if metrics]


def replay_identity(work_dir: str, config: Optional[str] = None):
    """The names of ``config``, else of the config dumped in ``work_dir``
    as if it sat in ``configs/`` as ``work_dir`` sits in ``work_dirs/``."""
    dumped = sorted(_files(work_dir, '*.py'), key=osp.getmtime)
    if config or not dumped:
        return config_identity(config)
    stem = osp.splitext(osp.basename(dumped[-1]))[0]
    rel = osp.relpath(osp.abspath(work_dir), work_dirs_root(work_dir))
    rel = [p for p in rel.split(osp.sep) if p != '.']
    if rel[-1:] == [stem]:
        rel.pop()
    return config_identity(osp.join('configs', *rel, stem + '.py'))


def replay_work_dir(work_dir: str, tracking_uri: Optional[str] = None,
                    config: Optional[str] = None,
                    experiment_name: Optional[str] = None,
                    run_name: Optional[str] = None) -> ReplayResult:
    """Log the local log of ``work_dir`` as training would have: into the
    run of :data:`RUN_ID_FILE` (the steps it lacks), else a new run.

    Args:
        tracking_uri, experiment_name, run_name (str, optional): Override
            the config's ``UnoMLflowVisBackend`` arguments.
        config (str, optional): The config's original path, for the names.

    Raises:
        FileNotFoundError: When ``work_dir`` has no local log.
    """
    from mlflow.entities import Metric
    from PIL import Image
    bound_http_requests()
    work_dir, logs = osp.abspath(work_dir), find_logs(work_dir)
    if not logs:
        raise FileNotFoundError(
            f'no local log in {work_dir}: expected <timestamp>/vis_data/'
            'scalars.json below it (is it a work dir?)')
    found = _files(work_dir, '*/vis_data/config.py') or sorted(
        _files(work_dir, '*.py'), key=osp.getmtime)
    cfg = Config.fromfile(found[-1]) if found else Config()
    args = next((b for b in cfg.get('visualizer', {}).get('vis_backends', [])
                 if b.get('type') == 'UnoMLflowVisBackend'), {})
    ident = replay_identity(work_dir, config)
    backend = UnoMLflowVisBackend(
        work_dir, tracking_uri or args.get('tracking_uri'),
        experiment_name or args.get('experiment_name') or ident.experiment,
        run_name or args.get('run_name') or ident.run_name,
        tags=args.get('tags'), artifact_location=args.get('artifact_location'))
    starts = [int(1000 * time.mktime(time.strptime(
        osp.basename(osp.dirname(log)), '%Y%m%d_%H%M%S'))) for log in logs]
    continued = backend._start_run(resume=True, start_time=starts[0])
    metrics, images = [], {}
    for log, start in zip(logs, starts):
        metrics += [Metric(k, v, start, step) for step, values in
                    read_scalars(f'{log}/scalars.json')
                    for k, v in values.items()]
        for path in glob.glob(f'{glob.escape(log)}/vis_image/*.png'):
            # LocalVisBackend saves vis_image/<name>_<step>.png
            name, step = osp.basename(path)[:-len('.png')].rsplit('_', 1)
            images[image_artifact(name, step)] = Image.open(path)
    client, run_id = backend.client, backend.run_id
    seen = {(m.key, m.step) for key in {m.key for m in metrics} if continued
            for m in client.get_metric_history(run_id, key)}
    metrics = [m for m in metrics if (m.key, m.step) not in seen]
    backend._log(
        collect_params(cfg.to_dict(), args.get('extra_params', ())), metrics,
        {'replayed_from': work_dir, 'config_path': config},
        cfg.pretty_text if found else None, images)
    end = max(osp.getmtime(f'{log}/scalars.json') for log in logs)
    client.set_terminated(run_id, 'FINISHED', end_time=int(end * 1000))
    run = client.get_run(run_id).info
    return ReplayResult(run_id, client.get_experiment(run.experiment_id).name,
                        run.run_name, backend.tracking_uri, len(metrics),
                        len(logs), continued)
