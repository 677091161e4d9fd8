"""Evaluators run by tools/test.py (registry ``EVALUATORS``).

Besides the held-out objective losses, the ShapesWorld benchmarks:
GenEval (:mod:`.geneval`, scored with :class:`ShapesDetector` or a
registered wrapper of GenEval's own detector), editing (:mod:`.edit_bench`)
and understanding (:mod:`.understanding_bench`).
"""
from .edit_bench import EditMetric, score_edit
from .geneval import (GenEvalMetric, evaluate_image, relative_position,
                      summarize)
from .loss_metric import ObjectiveLossMetric
from .shapes_detector import Detection, ShapesDetector
from .understanding_bench import (UnderstandingMetric, parse_caption,
                                  score_caption)

__all__ = [
    'ObjectiveLossMetric', 'ShapesDetector', 'Detection', 'GenEvalMetric',
    'evaluate_image', 'relative_position', 'summarize', 'EditMetric',
    'score_edit', 'UnderstandingMetric', 'parse_caption', 'score_caption'
]
