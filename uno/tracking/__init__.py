"""Experiment tracking (MLflow) for mmengine's Visualizer."""
from .mlflow_backend import (UnoMLflowVisBackend, find_mlflow_backend,
                             log_eval_metrics, report_tracking)
from .replay import replay_work_dir

__all__ = ['UnoMLflowVisBackend', 'find_mlflow_backend', 'log_eval_metrics',
           'replay_work_dir', 'report_tracking']
