"""Evaluators run by tools/test.py (registry ``EVALUATORS``)."""
from .loss_metric import ObjectiveLossMetric

__all__ = ['ObjectiveLossMetric']
