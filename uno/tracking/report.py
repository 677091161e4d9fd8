"""Tell the user where a run's metrics are, and log evaluation results."""
import os.path as osp
from typing import Dict, Optional

from mmengine.logging import print_log

from .mlflow_backend import UnoMLflowVisBackend


def find_mlflow_backend(runner) -> Optional[UnoMLflowVisBackend]:
    """The runner's MLflow backend, if its visualizer has one."""
    backends = getattr(runner.visualizer, '_vis_backends', {}) or {}
    for backend in backends.values():
        if isinstance(backend, UnoMLflowVisBackend):
            return backend
    return None


def report_tracking(runner) -> None:
    """Print the work dir, the MLflow run and the command to browse it."""
    lines = [f'work dir: {runner.work_dir}']
    backend = find_mlflow_backend(runner)
    if backend is not None and backend.run_id is not None:
        lines += [
            f'MLflow tracking URI: {backend.tracking_uri}',
            f'MLflow run id: {backend.run_id}',
            f'browse: mlflow ui --backend-store-uri {backend.tracking_uri}',
        ]
    elif backend is not None:
        lines.append('MLflow was unavailable; metrics are in the work '
                     "dir's vis_data/scalars.json")
    print_log('\n'.join(lines), logger='current')


def log_eval_metrics(runner, metrics: Dict[str, float], checkpoint: str,
                     tags: Optional[dict] = None) -> None:
    """Log evaluation metrics at the checkpoint's iteration.

    The run is tagged ``checkpoint`` and ``checkpoint_path`` (the
    checkpoint as given, absolute); ``tags`` are set last, so
    ``tags={'checkpoint': 'last'}`` names the checkpoint instead.
    """
    backend = find_mlflow_backend(runner)
    if backend is None:
        return
    numeric = {k: v for k, v in metrics.items()
               if isinstance(v, (int, float))}
    backend.add_scalars(numeric, step=runner.iter)
    backend.set_tags({
        'checkpoint': checkpoint,
        'checkpoint_path': osp.abspath(checkpoint),
        **(tags or {})
    })
