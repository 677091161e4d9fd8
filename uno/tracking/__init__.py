"""Experiment tracking back-ends (MLflow) for mmengine's Visualizer."""
from .mlflow_backend import UnoMLflowVisBackend
from .report import find_mlflow_backend, log_eval_metrics, report_tracking

__all__ = [
    'UnoMLflowVisBackend', 'find_mlflow_backend', 'log_eval_metrics',
    'report_tracking'
]

from .replay import replay_work_dir  # noqa: E402

__all__ += ['replay_work_dir']
