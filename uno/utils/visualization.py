"""Image grids with captions, for people to look at.

Used by ``tools/misc/shapesworld_grid.py`` and the benchmark grid hook:
a grid is a list of tiles, each a row of images with wrapped text under
it. PIL only, with matplotlib's DejaVu font when available.
"""
import os.path as osp
import textwrap
from typing import List, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PAD = 6  # pixels between images and around tiles
LINE_PX = 13  # height of one text line at 11 pt

Tile = Tuple[List[Image.Image], Sequence[str]]


def load_font(size: int = 11):
    """DejaVu Sans from matplotlib's data, else PIL's default font."""
    try:
        import matplotlib
        path = osp.join(matplotlib.get_data_path(), 'fonts', 'ttf',
                        'DejaVuSans.ttf')
        return ImageFont.truetype(path, size)
    except (ImportError, OSError):
        return ImageFont.load_default()


def zoom(image: np.ndarray, scale: int) -> Image.Image:
    """Nearest-neighbour enlargement of an ``(S, S, 3)`` uint8 image."""
    size = image.shape[0] * scale
    return Image.fromarray(image).resize((size, size), Image.NEAREST)


def draw_grid(tiles: list, cols: int, font) -> Image.Image:
    """Lay the tiles out row-major with wrapped text under the images."""
    first = tiles[0][0]
    width = sum(im.width for im in first) + PAD * (len(first) - 1)
    chars = max(12, width // 6)  # ~6 px per character at 11 pt
    wrapped = [[ln for t in text for ln in textwrap.wrap(t, chars)]
               for _, text in tiles]
    lines = max(len(w) for w in wrapped)
    tile_w = width + 2 * PAD
    tile_h = first[0].height + PAD * 3 + lines * LINE_PX
    rows = (len(tiles) + cols - 1) // cols
    cols = min(cols, len(tiles))
    grid = Image.new('RGB', (cols * tile_w, rows * tile_h), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for k, ((images, _), text) in enumerate(zip(tiles, wrapped)):
        x, y = (k % cols) * tile_w + PAD, (k // cols) * tile_h + PAD
        for im in images:
            grid.paste(im, (x, y))
            x += im.width + PAD
        x = (k % cols) * tile_w + PAD
        y += images[0].height + PAD
        for j, line in enumerate(text):
            draw.text((x, y + j * LINE_PX), line, fill=(0, 0, 0), font=font)
    return grid
