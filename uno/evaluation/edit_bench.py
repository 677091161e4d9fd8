"""ShapesWorld edit benchmark: instruction satisfied, rest preserved.

An edited image is judged twice. Satisfaction is read off detections of
the source and the output: a recoloured subject is found in its new colour
and no longer in its old one where it was; an added object is present and
the object count grew by exactly one; a removed object is gone; a moved
object is found once and its centre moved the stated way by at least a
threshold. Preservation compares the output with the source outside the
edit region (grown by a few pixels) by PSNR and mean absolute error.
"""
import math
from collections import defaultdict
from typing import Dict, List, Optional, Sequence

import numpy as np
from mmengine.evaluator import BaseMetric
from PIL import Image

from uno.datasets.shapesworld import EDIT_KINDS, EditPair
from uno.registry import EVALUATORS
from .shapes_detector import as_image, build_detector
from .stats import add_intervals

# one detector for score_edit calls that do not pass one (templates cached)
_DEFAULT = build_detector(None)
# unit step of each move direction in image coordinates (y grows down)
_STEP = {'left': (-1, 0), 'right': (1, 0), 'up': (0, -1), 'down': (0, 1)}


def preserved_mask(size: int,
                   region: Sequence[int],
                   dilate: int = 2) -> np.ndarray:
    """True outside ``region`` grown by ``dilate`` pixels, ``(S, S)``."""
    inside = np.zeros((size, size), dtype=bool)
    x0, y0, x1, y1 = region
    inside[max(y0, 0):y1, max(x0, 0):x1] = True
    if dilate > 0:
        # scipy when first used (~0.5 s less per tool process)
        from scipy import ndimage
        inside = ndimage.binary_dilation(
            inside, np.ones((3, 3), bool), iterations=dilate)
    return ~inside


def psnr_l1(source: np.ndarray, output: np.ndarray,
            mask: np.ndarray) -> Dict[str, float]:
    """PSNR (dB, inf if equal) and mean absolute error in ``[0, 1]`` over
    the pixels of ``mask``; NaN for an empty mask."""
    if not mask.any():
        return dict(preserved_psnr=math.nan, preserved_l1=math.nan)
    diff = source[mask].astype(np.float64) - output[mask]  # (P, 3)
    mse = float((diff**2).mean())
    psnr = math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)
    return dict(
        preserved_psnr=psnr, preserved_l1=float(np.abs(diff).mean()) / 255.0)


def _center(box: Sequence[float]) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])


def edit_satisfied(source_dets: List,
                   output_dets: List,
                   pair: EditPair,
                   image_size: int,
                   place_tol: float = 0.15,
                   move_threshold: float = 0.125) -> bool:
    """Whether the output's detections satisfy the pair's instruction.

    Args:
        source_dets (list): Detections of the source image.
        output_dets (list): Detections of the output image.
        pair (EditPair): The edit.
        image_size (int): Side of both images in pixels.
        place_tol (float): "About the same place" of a recolour: centres
            at most this fraction of the side apart. Defaults to 0.15.
        move_threshold (float): Least move along the stated direction, as
            a fraction of the side (the world moves by >= 0.25). Defaults
            to 0.125.
    """
    subj = pair.subject
    where = _center(subj.box(image_size))
    tol = place_tol * image_size

    def find(dets, color, near=None):
        return [
            d for d in dets if d.cls == subj.shape and d.color == color and (
                near is None or np.linalg.norm(_center(d.box) - near) <= tol)
        ]

    if pair.kind == 'recolor':
        return bool(
            find(output_dets, pair.detail, where)
            and not find(output_dets, subj.color, where))
    if pair.kind == 'add':
        before = len(find(source_dets, subj.color))
        return (len(find(output_dets, subj.color)) == before + 1
                and len(output_dets) == len(source_dets) + 1)
    if pair.kind == 'remove':
        return not find(output_dets, subj.color)
    if pair.kind == 'move':
        hits = find(output_dets, subj.color)
        if len(hits) != 1:
            return False
        shift = _center(hits[0].box) - where  # (2,)
        return float(shift @ _STEP[pair.detail]) >= move_threshold * image_size
    raise ValueError(f'unknown edit kind {pair.kind!r}')


def score_edit(source_img: np.ndarray,
               output_img: np.ndarray,
               pair: EditPair,
               detector=None,
               dilate: int = 2,
               place_tol: float = 0.15,
               move_threshold: float = 0.125) -> dict:
    """Score one edited image.

    Args:
        source_img (np.ndarray): The source render, ``(S, S, 3)`` uint8 at
            the resolution of ``pair.region``.
        output_img (np.ndarray): The edited image; resized (bilinear) to
            ``S`` if its size differs.
        pair (EditPair): The edit pair.
        detector (Callable, optional): Image to detections. Defaults to
            None (:class:`ShapesDetector`).
        dilate (int): Pixels by which the region grows before measuring
            preservation. Defaults to 2.
        place_tol, move_threshold: See :func:`edit_satisfied`.

    Returns:
        dict: ``satisfied`` (bool), ``preserved_psnr`` (dB, inf if the
        preserved pixels are identical) and ``preserved_l1`` (in [0, 1]).
    """
    detector = _DEFAULT if detector is None else detector
    source_img, output_img = as_image(source_img), as_image(output_img)
    size = source_img.shape[0]
    if output_img.shape != source_img.shape:
        output_img = np.asarray(
            Image.fromarray(output_img).resize((size, size), Image.BILINEAR))
    ok = edit_satisfied(
        detector(source_img), detector(output_img), pair, size, place_tol,
        move_threshold)
    mask = preserved_mask(size, pair.region, dilate)
    return dict(satisfied=ok, **psnr_l1(source_img, output_img, mask))


@EVALUATORS.register_module()
class EditMetric(BaseMetric):
    """Edit benchmark: ``edit/<kind>/satisfied``, ``edit/<kind>/psnr``,
    ``edit/<kind>/l1`` and their means over kinds (``edit/satisfied``,
    ``edit/psnr``, ``edit/l1``, GenEval's averaging).

    Each data sample is a dict with ``source`` and ``output`` images
    (``(H, W, 3)`` uint8) and ``pair`` (the :class:`EditPair`). PSNR is
    capped at ``max_psnr`` before averaging, since unchanged pixels give
    an infinite PSNR.

    Args:
        detector (dict | Callable, optional): See :class:`GenEvalMetric`.
            Defaults to None (:class:`ShapesDetector`).
        dilate (int): See :func:`score_edit`. Defaults to 2.
        max_psnr (float): Cap of the per-image PSNR. Defaults to 60.
        prefix (str): Metric name prefix. Defaults to 'edit'.
    """
    default_prefix = 'edit'

    def __init__(self,
                 detector=None,
                 dilate: int = 2,
                 max_psnr: float = 60.0,
                 prefix: Optional[str] = 'edit',
                 collect_device: str = 'cpu') -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.detector = build_detector(detector)
        self.dilate = dilate
        self.max_psnr = max_psnr

    #: benchmark samples of other tasks are ignored
    task = 'edit'

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            if sample.get('task', self.task) != self.task:
                continue
            pair = sample['pair']
            res = score_edit(sample['source'], sample['output'], pair,
                             self.detector, self.dilate)
            self.results.append(
                dict(
                    index=sample.get('index'),
                    kind=pair.kind,
                    satisfied=float(res['satisfied']),
                    psnr=min(res['preserved_psnr'], self.max_psnr),
                    l1=res['preserved_l1']))

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        self.last_results = list(results)  # per pair, for paired tests
        if not results:  # the benchmark had no sample of this task
            return {}
        per_kind = defaultdict(list)
        for res in results:
            per_kind[res['kind']].append(res)
        out = {}
        kinds = [k for k in EDIT_KINDS if k in per_kind]
        kinds += [k for k in per_kind if k not in kinds]
        for kind in kinds:
            for key in ('satisfied', 'psnr', 'l1'):
                vals = [r[key] for r in per_kind[kind]]
                out[f'{kind}/{key}'] = float(np.nanmean(vals))
            out[f'{kind}/num_samples'] = len(per_kind[kind])
        for key in ('satisfied', 'psnr', 'l1'):
            vals = [out[f'{k}/{key}'] for k in kinds]
            out[key] = float(np.mean(vals)) if vals else 0.0
        for key in ('satisfied', 'psnr'):  # intervals over pairs, by kind
            add_intervals(out, key, [r[key] for r in results],
                          [r['kind'] for r in results])
        out['num_samples'] = len(results)
        return out
