"""A training-free object detector for ShapesWorld images.

It stands in for GenEval's Mask2Former + CLIP colour classifier on
ShapesWorld: pixels are assigned to the nearest palette colour (or the
background, estimated from the image border) within a distance tolerance,
each colour's connected components become candidate objects, and a
component's shape is the rendered template (circle, square, triangle,
diamond, star drawn into the component's bounding box) with the highest
IoU. Colour distances rather than exact equality, hole filling and a
minimum area make it usable on imperfect generations (noise, small colour
shifts, blur), not only on crisp renders.
"""
from dataclasses import dataclass
from functools import lru_cache
from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from uno.datasets.shapesworld import COLOR_RGB, SHAPES, shape_polygon
from uno.registry import EVALUATORS

# 8-connectivity: the thin arms of a 7 px star touch only diagonally
_CONNECTIVITY = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class Detection:
    """One detected object.

    Args:
        cls (str): Class (the shape, e.g. ``'circle'``); GenEval's
            "class".
        color (str): Colour name, e.g. ``'red'``.
        box (tuple[float, float, float, float]): ``(x0, y0, x1, y1)`` in
            pixels, ends exclusive (pixel edges, as mmdet boxes).
        center (tuple[float, float]): Box centre ``(x, y)`` in pixels.
        area (int): Number of pixels of the object.
        score (float): Confidence in ``[0, 1]``.
    """

    cls: str
    color: str
    box: Tuple[float, float, float, float]
    center: Tuple[float, float]
    area: int
    score: float


def as_image(image) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 array from a numpy array or torch tensor.

    Accepts HWC or CHW layouts; float input is taken to be in ``[0, 1]``.
    """
    if hasattr(image, 'detach'):  # torch.Tensor without importing torch
        image = image.detach().cpu().numpy()
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f'expected an (H, W, 3) image, got {image.shape}')
    if image.shape[-1] != 3 and image.shape[0] == 3:
        image = image.transpose(1, 2, 0)  # (3, H, W) -> (H, W, 3)
    if image.dtype != np.uint8:
        image = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    return image


@lru_cache(maxsize=None)
def shape_templates(height: int, width: int) -> np.ndarray:
    """Masks of every shape drawn to fill a ``width`` x ``height`` box.

    Drawn the way :mod:`uno.datasets.shapesworld.render` draws objects, so
    a crisp render matches its template exactly. Cached per box size.

    Shape:
        Output: ``(len(SHAPES), height, width)`` bool.
    """
    out = np.zeros((len(SHAPES), height, width), dtype=bool)
    for i, shape in enumerate(SHAPES):
        img = Image.new('L', (width, height), 0)
        draw = ImageDraw.Draw(img)
        if shape == 'circle':
            draw.ellipse([0, 0, width - 1, height - 1], fill=255)
        elif shape == 'square':
            draw.rectangle([0, 0, width - 1, height - 1], fill=255)
        else:
            draw.polygon(shape_polygon(shape, (0, 0, width, height)), 255)
        out[i] = np.asarray(img) > 0  # (h, w)
    return out


def estimate_background(image: np.ndarray) -> np.ndarray:
    """Median colour of the one-pixel image border, ``(3,)`` float."""
    border = np.concatenate(
        [image[0], image[-1], image[1:-1, 0], image[1:-1, -1]])  # (P, 3)
    return np.median(border.astype(np.float32), axis=0)


@EVALUATORS.register_module()
class ShapesDetector:
    """Detects ShapesWorld objects by colour segmentation and templates.

    Args:
        colors (Sequence[str]): Palette colours to look for. Defaults to
            every colour of ShapesWorld.
        color_tol (float): Largest RGB distance from a pixel to its nearest
            palette colour for the pixel to count as that colour; pixels
            nearer to the background are background. Defaults to 100.
        min_area (float): Components smaller than this fraction of the
            image area are dropped as noise (a 7 px star at 32 px covers
            about 2%). Defaults to 0.006.
        background (tuple[int, int, int], optional): Fixed background RGB.
            Defaults to None (the median of the image border).

    Example:
        >>> det = ShapesDetector()
        >>> [(d.cls, d.color) for d in det(image)]
        [('circle', 'red'), ('star', 'blue')]
    """

    def __init__(self,
                 colors: Sequence[str] = tuple(COLOR_RGB),
                 color_tol: float = 100.0,
                 min_area: float = 0.006,
                 background: Optional[Tuple[int, int, int]] = None) -> None:
        unknown = [c for c in colors if c not in COLOR_RGB]
        if unknown or not colors:
            raise ValueError(f'colors must be a non-empty subset of '
                             f'{tuple(COLOR_RGB)}, got {tuple(colors)}')
        self.colors = tuple(colors)
        self.palette = np.array([COLOR_RGB[c] for c in self.colors],
                                dtype=np.float32)  # (C, 3)
        self.color_tol = float(color_tol)
        self.min_area = float(min_area)
        self.background = background

    def segment(self, image: np.ndarray) -> np.ndarray:
        """Per-pixel colour index into :attr:`colors`, -1 for background.

        Shape:
            Input: ``(H, W, 3)`` uint8. Output: ``(H, W)`` int.
        """
        image = as_image(image)
        if self.background is None:
            bg = estimate_background(image)
        else:
            bg = np.asarray(self.background, dtype=np.float32)
        refs = np.concatenate([self.palette, bg[None]])  # (C + 1, 3)
        pix = image.astype(np.float32)[:, :, None, :]  # (H, W, 1, 3)
        dist = np.linalg.norm(pix - refs, axis=-1)  # (H, W, C + 1)
        nearest = dist.argmin(-1)  # (H, W)
        near_dist = np.take_along_axis(dist, nearest[..., None], -1)[..., 0]
        is_color = (nearest < len(self.colors)) & (near_dist <= self.color_tol)
        return np.where(is_color, nearest, -1)

    def classify(self, mask: np.ndarray) -> Tuple[str, float]:
        """Shape of a component mask cropped to its bounding box.

        Returns:
            tuple[str, float]: The shape and its template IoU.
        """
        templates = shape_templates(*mask.shape)  # (K, h, w)
        inter = (templates & mask).sum((1, 2))
        union = (templates | mask).sum((1, 2))
        iou = inter / np.maximum(union, 1)  # (K,)
        best = int(iou.argmax())
        return SHAPES[best], float(iou[best])

    def __call__(self, image) -> List[Detection]:
        """Detect the objects of an image.

        Args:
            image (np.ndarray): ``(H, W, 3)`` uint8 RGB image (CHW tensors
                and floats in ``[0, 1]`` are converted).

        Returns:
            list[Detection]: Detections sorted by descending score (the
            order GenEval expects), ties in raster order.
        """
        image = as_image(image)
        height, width = image.shape[:2]
        min_pixels = max(2.0, self.min_area * height * width)
        labels = self.segment(image)  # (H, W)
        dets = []
        for ci, color in enumerate(self.colors):
            comps, num = ndimage.label(labels == ci, _CONNECTIVITY)
            if num == 0:
                continue
            for k, sl in enumerate(ndimage.find_objects(comps)):
                mask = comps[sl] == k + 1  # (h, w)
                # holes come from noise pixels; no shape has a real hole
                mask = ndimage.binary_fill_holes(mask)
                area = int(mask.sum())
                if area < min_pixels:
                    continue
                shape, score = self.classify(mask)
                y0, x0 = sl[0].start, sl[1].start
                y1, x1 = sl[0].stop, sl[1].stop
                dets.append(
                    Detection(shape, color, (x0, y0, x1, y1),
                              ((x0 + x1) / 2, (y0 + y1) / 2), area, score))
        dets.sort(key=lambda d: (-d.score, d.box[1], d.box[0]))
        return dets
