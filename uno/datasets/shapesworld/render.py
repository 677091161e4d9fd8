"""Rasterise ShapesWorld scenes with PIL, crisply and without antialiasing.

Every shape fills the odd-sided pixel box of :meth:`Obj.box`: circles and
squares are PIL ellipses and rectangles; triangles (apex up), diamonds and
five-pointed stars are polygons with integer vertices. Colours are flat, so
each pixel is either the background or exactly one object's colour, which
makes per-object masks (:func:`render_masks`) exact and lets a detector
classify shapes from their masks.
"""
import math
from typing import List, Tuple

import numpy as np
from PIL import Image, ImageDraw

from .scene import (COLOR_RGB, COLORS, RELATIONS, SHAPES, SIZES, Obj, Scene,
                    object_relations)

#: attributes of :func:`token_attributes`, with their class names (class 0
#: of each is "no object"; of ``relation``, also "relates to nothing")
TOKEN_ATTRIBUTES = dict(shape=SHAPES, color=COLORS, size=SIZES,
                        relation=RELATIONS)

# Inner/outer radius of the star: a regular star's 0.38 keeps the arms
# distinct at 11 px and still gives a five-pointed outline at 7 px.
STAR_INNER = 0.4


def _round(v: float) -> int:
    return int(math.floor(v + 0.5))


def shape_polygon(shape: str, box: Tuple[int, int, int,
                                         int]) -> List[Tuple[int, int]]:
    """Integer vertices of a polygonal shape that fills ``box``.

    Args:
        shape (str): ``'triangle'``, ``'diamond'`` or ``'star'``.
        box (tuple[int, int, int, int]): ``(x0, y0, x1, y1)``, ends
            exclusive.

    Returns:
        list[tuple[int, int]]: Vertices in drawing order.
    """
    x0, y0, x1, y1 = box
    xr, yb = x1 - 1, y1 - 1  # inclusive right / bottom pixel
    xc, yc = (x0 + xr) // 2, (y0 + yb) // 2  # centre pixel (odd sides)
    if shape == 'triangle':
        return [(xc, y0), (xr, yb), (x0, yb)]
    if shape == 'diamond':
        return [(xc, y0), (xr, yc), (xc, yb), (x0, yc)]
    if shape == 'star':
        # unit star, top point up: x in [-sin 72, sin 72], y in [-1, cos 36],
        # stretched to fill the box; x offsets are rounded away from the
        # centre column symmetrically so the star is mirror-symmetric
        half_w = math.sin(math.radians(72))
        bottom = math.cos(math.radians(36))
        points = []
        for k in range(10):
            rad = 1.0 if k % 2 == 0 else STAR_INNER
            ang = math.radians(-90 + 36 * k)
            dx = rad * math.cos(ang) / half_w * (xc - x0)
            y = (rad * math.sin(ang) + 1) / (1 + bottom) * (yb - y0)
            points.append(
                (xc + int(math.copysign(_round(abs(dx)), dx)), y0 + _round(y)))
        return points
    raise ValueError(f'{shape!r} is not a polygonal shape')


def draw_object(draw: ImageDraw.ImageDraw, obj: Obj, image_size: int,
                fill) -> None:
    """Draw one object onto a PIL image of side ``image_size``."""
    x0, y0, x1, y1 = obj.box(image_size)
    if obj.shape == 'circle':
        draw.ellipse([x0, y0, x1 - 1, y1 - 1], fill=fill)
    elif obj.shape == 'square':
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], fill=fill)
    else:
        draw.polygon(shape_polygon(obj.shape, (x0, y0, x1, y1)), fill=fill)


def render_scene(scene: Scene, image_size: int) -> np.ndarray:
    """Render a scene.

    Args:
        scene (Scene): The scene.
        image_size (int): Side of the square image in pixels.

    Returns:
        np.ndarray: RGB image, uint8.

    Shape:
        Output: ``(image_size, image_size, 3)``.
    """
    img = Image.new('RGB', (image_size, image_size), tuple(scene.bg))
    draw = ImageDraw.Draw(img)  # no antialiasing: PIL's default fill
    for obj in scene.objects:
        draw_object(draw, obj, image_size, COLOR_RGB[obj.color])
    return np.asarray(img, dtype=np.uint8).copy()  # (S, S, 3)


def render_masks(scene: Scene, image_size: int) -> np.ndarray:
    """Per-object boolean masks, in the order of ``scene.objects``.

    Returns:
        np.ndarray: bool masks.

    Shape:
        Output: ``(len(scene.objects), image_size, image_size)``.
    """
    masks = np.zeros((len(scene.objects), image_size, image_size), bool)
    for i, obj in enumerate(scene.objects):
        img = Image.new('L', (image_size, image_size), 0)
        draw_object(ImageDraw.Draw(img), obj, image_size, 255)
        masks[i] = np.asarray(img) > 0  # (S, S)
    return masks


def token_attributes(scene: Scene, image_size: int,
                     stride: int) -> np.ndarray:
    """Per-patch attribute labels: what an understanding encoder with
    ``stride``-pixel tokens should see in each token.

    A token is labelled with the object covering most of its pixels (ties:
    the later-drawn object), or 0 where it covers no object pixel.

    Args:
        scene (Scene): The scene.
        image_size (int): Render size; a multiple of ``stride``.
        stride (int): Pixels per token side.

    Returns:
        np.ndarray: int64 ``(4, (S / stride) ** 2)``, rows shape, colour,
        size and the object's relation to the other object of a two-object
        scene (:func:`~.scene.object_relations`) as ``1 + index`` in
        :data:`TOKEN_ATTRIBUTES`, row-major tokens.
    """
    if image_size % stride:
        raise ValueError(f'image size {image_size} is not a multiple of the '
                         f'token stride {stride}')
    g = image_size // stride
    masks = render_masks(scene, image_size)  # (O, S, S)
    labels = np.zeros((len(TOKEN_ATTRIBUTES), g * g), np.int64)
    if not len(masks):
        return labels
    cover = masks.reshape(len(masks), g, stride, g, stride).sum((2, 4))
    cover = cover.reshape(len(masks), g * g)  # (O, g*g) pixels per token
    # the last maximum: later objects are drawn over earlier ones
    best = len(masks) - 1 - cover[::-1].argmax(0)
    has = cover.max(0) > 0
    relations = object_relations(scene)
    for k, obj in enumerate(scene.objects):
        sel = has & (best == k)
        for row, (name, values) in enumerate(TOKEN_ATTRIBUTES.items()):
            value = relations[k] if name == 'relation' else getattr(obj, name)
            labels[row, sel] = 0 if value is None else 1 + values.index(value)
    return labels
