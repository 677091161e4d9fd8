"""Write GenEval's ``evaluation_metadata.jsonl`` for ShapesWorld.

One GenEval-schema entry per line (``tag``, ``include``, optional
``exclude``, ``prompt``), ``--n-per-tag`` entries for each of GenEval's
six tags, made from ShapesWorld scenes of ``--split``. The file can be fed
to any generation script that reads GenEval metadata and scored with
:class:`uno.evaluation.GenEvalMetric`.

Example::

    python tools/misc/make_geneval_metadata.py \\
        --out data/shapesworld_geneval/evaluation_metadata.jsonl \\
        --n-per-tag 100 --image-size 32 --seed 0
"""
import argparse
import os
import os.path as osp
import sys
from collections import Counter

try:
    import uno  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0,
                    osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))

from uno.datasets.shapesworld import ShapesWorld  # noqa: E402
from uno.datasets.shapesworld.geneval_items import (  # noqa: E402
    make_geneval_metadata, write_jsonl)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Write GenEval-schema metadata of ShapesWorld.')
    parser.add_argument(
        '--out', required=True, help='output evaluation_metadata.jsonl')
    parser.add_argument(
        '--n-per-tag', type=int, default=100, help='entries per tag')
    parser.add_argument(
        '--image-size',
        type=int,
        default=32,
        help='image side of the world (placements are checked at it)')
    parser.add_argument(
        '--seed',
        type=int,
        default=0,
        help='seed of the world and of the visited scene indices')
    parser.add_argument('--split', default='test', choices=['train', 'test'])
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    world = ShapesWorld(image_size=args.image_size, seed=args.seed)
    entries = make_geneval_metadata(world, args.n_per_tag, args.split,
                                    args.seed)
    if osp.dirname(args.out):
        os.makedirs(osp.dirname(args.out), exist_ok=True)
    write_jsonl(entries, args.out)
    counts = Counter(e['tag'] for e in entries)
    print(f'wrote {len(entries)} entries to {args.out}: ' +
          ', '.join(f'{t} {n}' for t, n in counts.items()))


if __name__ == '__main__':
    main()
