"""Experiment tracking back-ends (MLflow) for mmengine's Visualizer."""
from .mlflow_backend import UnoMLflowVisBackend

__all__ = ['UnoMLflowVisBackend']
