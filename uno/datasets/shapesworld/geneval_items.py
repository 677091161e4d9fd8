"""GenEval-schema benchmark items made from ShapesWorld scenes.

Entries use the schema of GenEval's ``prompts/evaluation_metadata.jsonl``
(``tag``, ``include``, optional ``exclude``, ``prompt``; ShapesWorld shapes
are GenEval's classes). :mod:`uno.evaluation.geneval` scores generated
images against them by GenEval's rules.
"""
import json
from typing import Iterable, List, Sequence, Tuple

import numpy as np

from .scene import Scene
from .world import ShapesWorld

# GenEval's tags, in the order of its evaluation_metadata.jsonl
GENEVAL_TAGS = ('single_object', 'two_object', 'counting', 'colors',
                'position', 'color_attr')
# ShapesWorld scene tag that each GenEval tag is made from: the same name,
# except that a 'colors' prompt is a single object with a stated colour
SCENE_TAG = dict({t: t for t in GENEVAL_TAGS}, colors='single_object')


def scene_metadata(scene: Scene, tag: str, prompt: str) -> dict:
    """The GenEval entry that checks ``scene`` under GenEval tag ``tag``.

    Only what the tag tests is required, as in GenEval: classes for
    ``single_object``/``two_object``/``position``, counts (with an
    ``exclude`` of count + 1) for ``counting``, and colours for
    ``colors``/``color_attr``. A position entry lists the reference object
    first and gives the other ``position: [relation, 0]``, so
    ``'a photo of A above B'`` becomes ``[B, A above #0]``.
    """
    objs = scene.objects

    def req(obj, color=False):
        out = {'class': obj.shape, 'count': 1}
        if color:
            out['color'] = obj.color
        return out

    entry = {'tag': tag}
    if tag in ('single_object', 'colors'):
        entry['include'] = [req(objs[0], tag == 'colors')]
    elif tag in ('two_object', 'color_attr'):
        entry['include'] = [req(o, tag == 'color_attr') for o in objs]
    elif tag == 'counting':
        cls, n = objs[0].shape, len(objs)
        entry['include'] = [{'class': cls, 'count': n}]
        entry['exclude'] = [{'class': cls, 'count': n + 1}]
    elif tag == 'position':
        first, second = objs
        entry['include'] = [
            req(second),
            dict(req(first), position=[scene.relation, 0])
        ]
    else:
        raise ValueError(f'unknown GenEval tag {tag!r}')
    entry['prompt'] = prompt
    return entry


def make_geneval_items(
        world: ShapesWorld,
        n_per_tag: int,
        split: str = 'test',
        seed: int = 0,
        tags: Sequence[str] = GENEVAL_TAGS) -> List[Tuple[dict, Scene]]:
    """GenEval entries with the ShapesWorld scenes they were made from.

    Scenes ``world.scene(i, split)`` are visited at indices drawn from a
    generator seeded with ``seed``; each is assigned to a GenEval tag that
    still needs entries (single-object scenes alternate between
    ``single_object`` and ``colors``). Prompts are ``world.prompt(scene)``,
    the text the world's models are trained on.

    Args:
        world (ShapesWorld): The world.
        n_per_tag (int): Entries per tag.
        split (str): Split of the scenes. Defaults to 'test'.
        seed (int): Seed of the visited indices. Defaults to 0.
        tags (Sequence[str]): GenEval tags to make. Defaults to all six.

    Returns:
        list[tuple[dict, Scene]]: Grouped by tag in the order of ``tags``.
    """
    bad = [t for t in tags if t not in GENEVAL_TAGS]
    if bad:
        raise ValueError(f'unknown GenEval tags {bad}; use {GENEVAL_TAGS}')
    missing = [
        t for t in tags if SCENE_TAG[t] not in world.sampler.tags or (
            t == 'position' and len(world.shapes) < 2)
    ]
    if missing:
        raise ValueError(f'cannot make GenEval tags {missing} with this '
                         f'world')
    rng = np.random.default_rng(seed)
    items = {t: [] for t in tags}
    for _ in range(1000 + 100 * n_per_tag * len(tags)):
        open_tags = [t for t in tags if len(items[t]) < n_per_tag]
        if not open_tags:
            break
        scene = world.scene(int(rng.integers(2**31 - 1)), split)
        wanted = [t for t in open_tags if SCENE_TAG[t] == scene.tag]
        # GenEval matches objects by class only: in a position prompt with
        # one class twice, both includes would pick the same object
        one_class = len({o.shape for o in scene.objects}) == 1
        if not wanted or (scene.tag == 'position' and one_class):
            continue
        tag = min(wanted, key=lambda t: len(items[t]))  # first on ties
        entry = scene_metadata(scene, tag, world.prompt(scene))
        items[tag].append((entry, scene))
    if any(len(items[t]) < n_per_tag for t in tags):
        raise RuntimeError(f'could not fill {n_per_tag} entries per tag')
    return [item for t in tags for item in items[t]]


def make_geneval_metadata(world: ShapesWorld,
                          n_per_tag: int,
                          split: str = 'test',
                          seed: int = 0) -> List[dict]:
    """GenEval-schema entries of ShapesWorld, see
    :func:`make_geneval_items` (same arguments, entries only)."""
    return [e for e, _ in make_geneval_items(world, n_per_tag, split, seed)]


def write_jsonl(entries: Iterable[dict], path: str) -> None:
    """Write one JSON object per line (GenEval's metadata format)."""
    with open(path, 'w', encoding='utf-8') as f:
        for entry in entries:
            f.write(json.dumps(entry) + '\n')


def read_jsonl(path: str) -> List[dict]:
    """Read one JSON object per non-empty line."""
    with open(path, encoding='utf-8') as f:
        return [json.loads(line) for line in f if line.strip()]
