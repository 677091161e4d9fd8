"""Replay a work dir's local log into MLflow once the store is back.

While MLflow is down, ``LocalVisBackend`` keeps each start of a run in
``<work_dir>/<timestamp>/vis_data/`` (``scalars.json``, ``config.py``,
``vis_image/``). :func:`replay_work_dir` logs them as the backend would
have, into the run of ``mlflow_run_id.txt`` if the store has it (only the
(metric, step) pairs it lacks: a second replay adds nothing), else into a
new run that it records there, so that ``--resume`` continues it.
"""
import glob
import json
import os.path as osp
from datetime import datetime
from typing import Dict, List, NamedTuple, Optional, Tuple

from mmengine.config import Config

from uno.utils.paths import ConfigIdentity, config_identity
from .mlflow_backend import (UnoMLflowVisBackend, bound_http_requests,
                             clean_metrics,
                             collect_params, image_artifact, work_dirs_root)


class ReplayResult(NamedTuple):
    """What :func:`replay_work_dir` sent where."""
    run_id: str
    experiment: str
    run_name: str
    tracking_uri: str
    num_metrics: int  # metric values logged (those the run had: skipped)
    num_logs: int  # timestamp folders replayed
    continued: bool  # the run of mlflow_run_id.txt was continued


def find_logs(work_dir: str) -> List[str]:
    """The ``<timestamp>/vis_data`` folders with scalars, oldest first."""
    pattern = osp.join(glob.escape(work_dir), '*', 'vis_data', 'scalars.json')
    return [osp.dirname(path) for path in sorted(glob.glob(pattern))]


def read_scalars(path: str) -> List[Tuple[int, Dict[str, float]]]:
    """``(step, metrics)`` of each line of a ``scalars.json`` with metrics
    (:func:`clean_metrics`); a torn last line (a killed run) is skipped."""
    rows = []
    with open(path) as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            step, metrics = int(record.pop('step', 0)), clean_metrics(record)
            rows += [(step, metrics)] if metrics else []
    return rows


def replay_identity(work_dir: str,
                    config: Optional[str] = None) -> ConfigIdentity:
    """The names of the run logged in ``work_dir``: those of ``config``
    (its original path) if given, else the run is named after the config
    dumped into the work dir and the experiment after the work dir's
    folders below ``work_dirs/`` but that name (``'default'`` outside)."""
    dumped = _dumped(work_dir)
    if config or not dumped:
        return config_identity(config)
    stem = osp.splitext(osp.basename(dumped[-1]))[0]
    rel = osp.relpath(osp.abspath(work_dir), work_dirs_root(work_dir))
    rel = [p for p in rel.split(osp.sep) if p != '.']
    if rel[-1:] == [stem]:  # tools/train.py's work_dirs/<folder>/<stem>
        rel.pop()
    return config_identity(osp.join('configs', *rel, stem + '.py'))


def replay_work_dir(work_dir: str, tracking_uri: Optional[str] = None,
                    config: Optional[str] = None,
                    experiment_name: Optional[str] = None,
                    run_name: Optional[str] = None) -> ReplayResult:
    """Replay the local log of ``work_dir`` into an MLflow run.

    Args:
        work_dir (str): The run's work dir.
        tracking_uri, experiment_name, run_name (str, optional): Override
            the arguments of the config's ``UnoMLflowVisBackend``, which
            apply as in training (with ``extra_params``, ``tags`` and
            ``artifact_location``). Default to training's defaults.
        config (str, optional): The config's original path, for the
            names (:func:`replay_identity`). Defaults to None.

    Returns:
        ReplayResult: The run and what was logged.

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
    found = sorted(glob.glob(osp.join(glob.escape(work_dir), '*', 'vis_data',
                                      'config.py'))) or _dumped(work_dir)
    cfg = Config.fromfile(found[-1]) if found else Config()
    args = next((b for b in cfg.get('visualizer', {}).get('vis_backends', [])
                 if b.get('type') == 'UnoMLflowVisBackend'), {})
    ident = replay_identity(work_dir, config)
    backend = UnoMLflowVisBackend(
        work_dir, tracking_uri or args.get('tracking_uri'),
        experiment_name or args.get('experiment_name') or ident.experiment,
        run_name or args.get('run_name') or ident.run_name,
        tags=args.get('tags'), artifact_location=args.get('artifact_location'))
    starts = [int(1000 * datetime.strptime(osp.basename(osp.dirname(log)),
                                           '%Y%m%d_%H%M%S').timestamp())
              for log in logs]
    continued = backend.start_run(resume=True, start_time=starts[0])
    metrics, images = [], {}
    for log, start in zip(logs, starts):
        metrics += [Metric(k, v, start, step) for step, values in
                    read_scalars(f'{log}/scalars.json')
                    for k, v in values.items()]
        for path in glob.glob(f'{glob.escape(log)}/vis_image/*.png'):
            # LocalVisBackend saves vis_image/<name>_<step>.png
            name, step = osp.basename(path)[:-len('.png')].rsplit('_', 1)
            images[image_artifact(name, step)] = Image.open(path)
    num = backend.log(
        collect_params(cfg.to_dict(), args.get('extra_params', ())), metrics,
        {'replayed_from': work_dir, 'config_path': config},
        cfg.pretty_text if found else None, images, skip_logged=continued)
    end = max(osp.getmtime(f'{log}/scalars.json') for log in logs)
    backend.client.set_terminated(backend.run_id, 'FINISHED',
                                  end_time=int(end * 1000))
    run = backend.client.get_run(backend.run_id).info
    experiment = backend.client.get_experiment(run.experiment_id).name
    return ReplayResult(run.run_id, experiment, run.run_name,
                        backend.tracking_uri, num, len(logs), continued)


def _dumped(work_dir: str) -> List[str]:
    """The configs the Runner dumped into ``work_dir``, oldest first."""
    return sorted(glob.glob(osp.join(glob.escape(work_dir), '*.py')),
                  key=osp.getmtime)
