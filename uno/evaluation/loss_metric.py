"""Held-out objective losses under fixed noise (a validation metric).

``UnoTrainer.predict`` evaluates every objective per sample with noise
seeded by the sample index, so the numbers are comparable across
checkpoints and runs; this metric averages them over the split.
"""
import math
from collections import defaultdict
from typing import Dict, List, Sequence

from mmengine.evaluator import BaseMetric

from uno.registry import EVALUATORS


@EVALUATORS.register_module()
class ObjectiveLossMetric(BaseMetric):
    """Mean per-sample loss of each objective over the evaluated split.

    Reported as ``<prefix>/loss/<name>`` plus ``<prefix>/num_samples``.

    Args:
        prefix (str): Metric name prefix. Defaults to ``'eval'``.
    """
    default_prefix = 'eval'

    def __init__(self, prefix: str = 'eval', collect_device: str = 'cpu'):
        super().__init__(collect_device=collect_device, prefix=prefix)

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            self.results.append({
                k: v
                for k, v in sample.items() if k.startswith('loss/')
            })

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        sums, counts = defaultdict(float), defaultdict(int)
        for res in results:
            for key, value in res.items():
                if value is not None and not math.isnan(value):
                    sums[key] += value
                    counts[key] += 1
        metrics = {k: sums[k] / counts[k] for k in sums if counts[k]}
        metrics['num_samples'] = len(results)
        return metrics
