"""Save a PNG grid of ShapesWorld samples with their text.

Each tile is the render at ``--image-size`` enlarged with nearest-neighbour
resampling (so it shows exactly the pixels a model sees), with the prompt
and one caption below it. With ``--edits`` each tile is a source/target
pair, the changed region outlined on a third, dimmed copy of the target,
under the edit instruction.

Examples::

    python tools/misc/shapesworld_grid.py --out /tmp/sw_grid.png --num 24
    python tools/misc/shapesworld_grid.py --out /tmp/sw_edits.png --edits
"""
import argparse
import os.path as osp
import sys

import numpy as np
from PIL import Image, ImageDraw

try:
    import uno  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0,
                    osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))

from uno.datasets.shapesworld import ShapesWorld  # noqa: E402
from uno.utils.visualization import (draw_grid, load_font,  # noqa: E402
                                     zoom)


def parse_args():
    parser = argparse.ArgumentParser(
        description='Save a grid of ShapesWorld samples with captions.')
    parser.add_argument('--out', required=True, help='output PNG path')
    parser.add_argument('--num', type=int, default=24, help='samples')
    parser.add_argument('--seed', type=int, default=0, help='world seed')
    parser.add_argument('--split', default='train', choices=['train', 'test'])
    parser.add_argument('--image-size', type=int, default=32)
    parser.add_argument(
        '--scale', type=int, default=4, help='nearest-neighbour zoom')
    parser.add_argument('--cols', type=int, default=6, help='tiles per row')
    parser.add_argument(
        '--edits',
        action='store_true',
        help='show edit pairs (source, target, region) with instructions')
    return parser.parse_args()


def region_view(image: np.ndarray, region, scale: int) -> Image.Image:
    """The image dimmed, with ``region`` (x0, y0, x1, y1) outlined."""
    dim = (image.astype(np.float32) * 0.5 + 127).astype(np.uint8)
    tile = zoom(dim, scale)
    x0, y0, x1, y1 = (v * scale for v in region)
    ImageDraw.Draw(tile).rectangle([x0, y0, x1 - 1, y1 - 1], outline=(0, 0, 0))
    return tile


def make_tiles(world: ShapesWorld, args) -> list:
    """``(images, text lines)`` per sample."""
    tiles = []
    for i in range(args.num):
        if args.edits:
            pair = world.edit(i, args.split)
            target = world.render(pair.target)
            images = [
                zoom(world.render(pair.source), args.scale),
                zoom(target, args.scale),
                region_view(target, pair.region, args.scale)
            ]
            text = [f'[{pair.kind}] {pair.instruction}']
        else:
            scene = world.scene(i, args.split)
            images = [zoom(world.render(scene), args.scale)]
            rng = np.random.default_rng([args.seed, i])
            text = [
                f'[{scene.tag}] {world.prompt(scene)}',
                world.caption(scene, rng)
            ]
        tiles.append((images, text))
    return tiles


def main():
    args = parse_args()
    world = ShapesWorld(image_size=args.image_size, seed=args.seed)
    grid = draw_grid(make_tiles(world, args), args.cols, load_font())
    grid.save(args.out)
    print(f'saved {args.num} {"edit pairs" if args.edits else "scenes"} '
          f'to {args.out}')


if __name__ == '__main__':
    main()
