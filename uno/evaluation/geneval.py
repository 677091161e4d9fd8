"""GenEval for ShapesWorld: metadata, GenEval's scoring rules, the metric.

Entries use the schema of GenEval's ``prompts/evaluation_metadata.jsonl``
(``tag``, ``include``, optional ``exclude``, ``prompt``; ShapesWorld shapes
are GenEval's classes), and an image is judged by the rules of GenEval's
``evaluation/evaluate_images.py``: detections are kept per class by
confidence (a stricter threshold for counting), includes are AND-ed,
excludes OR-ed, colour and position are checked on the most confident
objects only, and relative position compares centre offsets after
subtracting a fraction of the box sizes. The summary is that of
``evaluation/summary_scores.py``: the overall score is the mean of the
per-tag accuracies. Rules re-implemented from djghosh13/geneval (MIT);
no code is copied. The detector is swappable (:class:`GenEvalMetric`), so
the same code scores real GenEval prompts with GenEval's own detector.
"""
import json
from collections import defaultdict
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

import numpy as np
from mmengine.evaluator import BaseMetric

from uno.registry import EVALUATORS
from .shapes_detector import Detection, as_image, build_detector
from .stats import add_intervals

# evaluate_images.py defaults: --options threshold, counting_threshold,
# max_objects, max_overlap and position_threshold
THRESHOLD = 0.3
COUNTING_THRESHOLD = 0.9
MAX_OBJECTS = 16
MAX_OVERLAP = 1.0
POSITION_THRESHOLD = 0.1


# --- GenEval's rules ---------------------------------------------------------
def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two ``(x0, y0, x1, y1)`` boxes (pixel edges)."""
    inter = (
        max(min(a[2], b[2]) - max(a[0], b[0]), 0) *
        max(min(a[3], b[3]) - max(a[1], b[1]), 0))
    union = ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) -
             inter)
    return inter / union if union > 0 else 0.0


def relative_position(box_a: Sequence[float],
                      box_b: Sequence[float],
                      threshold: float = POSITION_THRESHOLD) -> Set[str]:
    """Relations that hold for A relative to B (GenEval's rule).

    The centre offset loses ``threshold`` times the summed box sizes per
    axis (clipped at 0); of the remainder, divided by the offset's length,
    an axis component beyond 0.5 gives ``'left of'``/``'right of'`` (x) or
    ``'above'``/``'below'`` (y, image rows grow downwards). Overlapping
    centres give no relation.
    """
    boxes = np.asarray([box_a[:4], box_b[:4]], dtype=np.float64)
    boxes = boxes.reshape(2, 2, 2)  # (object, corner, xy)
    center_a, center_b = boxes.mean(1)
    dim_a, dim_b = np.abs(boxes[:, 1] - boxes[:, 0])
    offset = center_a - center_b
    revised = np.maximum(np.abs(offset) - threshold *
                         (dim_a + dim_b), 0) * np.sign(offset)
    if np.all(np.abs(revised) < 1e-3):
        return set()
    dx, dy = revised / np.linalg.norm(offset)
    relations = set()
    if dx < -0.5:
        relations.add('left of')
    if dx > 0.5:
        relations.add('right of')
    if dy < -0.5:
        relations.add('above')
    if dy > 0.5:
        relations.add('below')
    return relations


def group_detections(
        detections: Iterable[Detection],
        tag: str,
        threshold: float = THRESHOLD,
        counting_threshold: float = COUNTING_THRESHOLD,
        max_objects: int = MAX_OBJECTS,
        max_overlap: float = MAX_OVERLAP) -> Dict[str, List[Detection]]:
    """Detections kept per class, most confident first (GenEval's filter).

    Scores must exceed ``threshold`` (``counting_threshold`` for counting
    prompts); at most ``max_objects`` per class; a box overlapping a kept
    one of its class by IoU >= ``max_overlap`` is suppressed (1.0: never).
    """
    thr = counting_threshold if tag == 'counting' else threshold
    by_class = defaultdict(list)
    for det in detections:
        if det.score > thr:
            by_class[det.cls].append(det)
    kept = {}
    for cls, dets in by_class.items():
        order = sorted(dets, key=lambda d: -d.score)[:max_objects]
        out = []
        while order:
            best = order.pop(0)
            out.append(best)
            if max_overlap < 1:
                order = [
                    d for d in order if box_iou(best.box, d.box) < max_overlap
                ]
        kept[cls] = out
    return kept


def evaluate_image(
        detections: Iterable[Detection],
        metadata: dict,
        threshold: float = THRESHOLD,
        counting_threshold: float = COUNTING_THRESHOLD,
        max_objects: int = MAX_OBJECTS,
        max_overlap: float = MAX_OVERLAP,
        position_threshold: float = POSITION_THRESHOLD) -> Tuple[bool, str]:
    """Judge one image's detections against a GenEval entry.

    Each include needs ``count`` objects of its class; the colour and the
    position of the ``count`` most confident ones are checked, the
    position against every object matched by the include it references
    (an include that failed cannot be referenced). Each exclude fails the
    image if ``count`` or more objects of its class are kept.

    Args:
        detections (Iterable[Detection]): Objects with ``cls``, ``color``,
            ``box`` and ``score``.
        metadata (dict): A GenEval entry.
        threshold, counting_threshold, max_objects, max_overlap: See
            :func:`group_detections`.
        position_threshold (float): See :func:`relative_position`.

    Returns:
        tuple[bool, str]: Whether the image is correct and, if not, why
        (one line per failed clause).
    """
    objects = group_detections(detections, metadata.get('tag', ''), threshold,
                               counting_threshold, max_objects, max_overlap)
    reasons, matched_groups = [], []
    for req in metadata.get('include', []):
        cls, count = req['class'], req['count']
        found = objects.get(cls, [])[:count]
        matched = len(found) >= count
        if not matched:
            reasons.append(f'expected {cls}>={count}, found {len(found)}')
        elif 'color' in req:
            colors = [d.color for d in found]
            if colors.count(req['color']) < count:
                matched = False
                reasons.append(f"expected {req['color']} {cls}>={count}, "
                               f'found {sorted(colors)}')
        if matched and 'position' in req:
            relation, target = req['position']
            targets = matched_groups[target]
            if targets is None:
                matched = False
                reasons.append(f'no target for {cls} to be {relation}')
            else:
                for obj in found:
                    for other in targets:
                        rels = relative_position(obj.box, other.box,
                                                 position_threshold)
                        if relation not in rels:
                            matched = False
                            reasons.append(
                                f'expected {cls} {relation} target, found '
                                f"{' and '.join(sorted(rels)) or 'none'}")
                            break
                    if not matched:
                        break
        matched_groups.append(found if matched else None)
    for req in metadata.get('exclude', []):
        num = len(objects.get(req['class'], []))
        if num >= req['count']:
            reasons.append(f"expected {req['class']}<{req['count']}, "
                           f'found {num}')
    return not reasons, '\n'.join(reasons)


def summarize(results: Sequence[dict]) -> Dict[str, float]:
    """GenEval's summary of per-image results.

    Args:
        results (Sequence[dict]): ``tag`` and ``correct`` per image, and
            ``prompt`` (or ``metadata``) to group images of one prompt.

    Returns:
        dict: ``<tag>`` accuracy per tag, ``overall`` (mean of the per-tag
        accuracies), each with its 95% bootstrap interval over images
        (``<key>/ci_low``, ``<key>/ci_high``; within tags for
        ``overall``), ``correct_images`` (fraction of images),
        ``correct_prompts`` (fraction of prompts with a correct image),
        ``num_images`` and ``<tag>/num_correct``, ``<tag>/num_images``.
    """
    per_tag = defaultdict(list)
    per_prompt = defaultdict(list)
    for res in results:
        per_tag[res['tag']].append(bool(res['correct']))
        key = res.get('metadata', res.get('prompt'))
        per_prompt[key].append(bool(res['correct']))
    out = {}
    for tag, flags in per_tag.items():
        out[tag] = float(np.mean(flags))
        out[f'{tag}/num_correct'] = int(sum(flags))
        out[f'{tag}/num_images'] = len(flags)
        add_intervals(out, tag, flags)
    tag_scores = [out[t] for t in per_tag]
    out['overall'] = float(np.mean(tag_scores)) if tag_scores else 0.0
    add_intervals(out, 'overall', [float(r['correct']) for r in results],
                  [r['tag'] for r in results])
    flags = [bool(r['correct']) for r in results]
    out['correct_images'] = float(np.mean(flags)) if flags else 0.0
    out['correct_prompts'] = (
        float(np.mean([any(v)
                       for v in per_prompt.values()])) if per_prompt else 0.0)
    out['num_images'] = len(flags)
    return out


@EVALUATORS.register_module()
class GenEvalMetric(BaseMetric):
    """GenEval accuracy of generated images (``geneval/<tag>``, ``overall``).

    Each data sample is a dict with ``image`` (``(H, W, 3)`` uint8) and
    ``metadata`` (a GenEval entry, or its JSON string).

    Args:
        detector (dict | Callable, optional): A config built from
            ``EVALUATORS`` or a callable mapping an image to detections
            (objects with ``cls``, ``color``, ``box``, ``score``); register
            a wrapper of GenEval's Mask2Former + CLIP colour classifier to
            score real GenEval images. Defaults to None
            (:class:`ShapesDetector`).
        threshold, counting_threshold, max_objects, max_overlap,
            position_threshold: GenEval's options, see
            :func:`evaluate_image`. Default to GenEval's.
        prefix (str): Metric name prefix. Defaults to 'geneval'.
    """
    default_prefix = 'geneval'

    def __init__(self,
                 detector=None,
                 threshold: float = THRESHOLD,
                 counting_threshold: float = COUNTING_THRESHOLD,
                 max_objects: int = MAX_OBJECTS,
                 max_overlap: float = MAX_OVERLAP,
                 position_threshold: float = POSITION_THRESHOLD,
                 prefix: Optional[str] = 'geneval',
                 collect_device: str = 'cpu') -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.detector = build_detector(detector)
        self.rules = dict(
            threshold=threshold,
            counting_threshold=counting_threshold,
            max_objects=max_objects,
            max_overlap=max_overlap,
            position_threshold=position_threshold)

    #: benchmark samples of other tasks are ignored
    task = 'geneval'

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            if sample.get('task', self.task) != self.task:
                continue
            metadata = sample['metadata']
            if isinstance(metadata, str):
                metadata = json.loads(metadata)
            dets = self.detector(as_image(sample['image']))
            correct, reason = evaluate_image(dets, metadata, **self.rules)
            self.results.append(
                dict(
                    index=sample.get('index'),
                    tag=metadata['tag'],
                    correct=correct,
                    reason=reason,
                    prompt=metadata.get('prompt', ''),
                    metadata=json.dumps(metadata, sort_keys=True)))

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        self.last_results = list(results)  # per image, for paired tests
        if not results:  # the benchmark had no sample of this task
            return {}
        return summarize(results)
