"""Text of ShapesWorld: GenEval-style prompts, captions and edit instructions.

Prompts follow GenEval's templates (``'a photo of two blue squares'``,
``'a photo of a red circle left of a blue square'``). Captions re-describe
the same scene in several phrasings, as the method re-captions its images,
so that a captioning target is not just the prompt. All text is built from
the closed vocabulary returned by :func:`vocabulary_words`, which fixes the
word tokenizer's vocabulary. ``with_size`` adds the size word to every
description; a world with a single size leaves it out.
"""
from dataclasses import replace
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .scene import (COLORS, COUNT_WORDS, DIRECTIONS, INVERSE_RELATION,
                    RELATIONS, SHAPES, SIZES, EditPair, Obj, Scene,
                    object_relations)

_INVERSE = INVERSE_RELATION
_LONG = {
    'left of': 'to the left of',
    'right of': 'to the right of',
    'above': 'above',
    'below': 'below',
}
_MOVES = {
    'left': 'to the left',
    'right': 'to the right',
    'up': 'up',
    'down': 'down',
}
# every word of the fixed parts of the templates below
_TEMPLATE_WORDS = ('a an the and of photo there is are on light background '
                   'image showing single coloured picture with shape shapes '
                   'make add remove move to').split()

Group = Tuple[str, str, str, int]  # (size, colour, shape, count)


def _groups(objects: Sequence[Obj]) -> List[Group]:
    """Identical objects grouped, in order of first appearance."""
    order, counts = [], {}
    for o in objects:
        key = (o.size, o.color, o.shape)
        if key not in counts:
            order.append(key)
            counts[key] = 0
        counts[key] += 1
    return [(*k, counts[k]) for k in order]


def _article(phrase: str) -> str:
    return ('an ' if phrase[0] in 'aeiou' else 'a ') + phrase


def _phrase(group: Group, style: str, with_size: bool) -> str:
    """Noun phrase of a group.

    Styles: ``'article'`` (a red circle / two red circles), ``'number'``
    (one red circle), ``'single'`` (a single circle coloured red) and
    ``'coloured'`` (a circle coloured red).
    """
    size, color, shape, n = group
    size = f'{size} ' if with_size else ''
    noun = shape if n == 1 else shape + 's'
    if style in ('single', 'coloured'):
        head = f'{size}{noun} coloured {color}'
        if n > 1:
            return f'{COUNT_WORDS[n - 1]} {head}'
        return _article(head) if style == 'coloured' else 'a single ' + head
    head = f'{size}{color} {noun}'
    if n == 1 and style == 'article':
        return _article(head)
    return f'{COUNT_WORDS[n - 1]} {head}'


def _join(phrases: Sequence[str]) -> str:
    if len(phrases) == 1:
        return phrases[0]
    return ', '.join(phrases[:-1]) + ' and ' + phrases[-1]


def _describe(scene: Scene, style: str, with_size: bool) -> str:
    if not scene.objects:
        raise ValueError('an empty scene has no description')
    return _join(
        [_phrase(g, style, with_size) for g in _groups(scene.objects)])


def pair_relation(scene: Scene) -> Optional[str]:
    """The relation of a two-object scene's first object to its second.

    (:func:`~.scene.object_relations`; a position scene's own relation,
    which is always also its dominant axis.) None for other scenes.
    """
    return object_relations(scene)[0] if len(scene.objects) == 2 else None


def reading_order(scene: Scene) -> Optional[Tuple[Obj, str, Obj]]:
    """``(first, relation, second)`` of a two-object scene in reading order.

    Captions name first the object that is left of (or above) the other,
    so the relation they state is always ``'left of'`` or ``'above'``:
    which one is the picture's dominant axis. (With both orders in the
    captions, a captioner must bind the relation word to the object it
    named first; a small one learns the axis but guesses the direction,
    see docs/testbed.md.) Prompts keep every relation. None for scenes
    without a relation.
    """
    rel = pair_relation(scene)
    if rel is None:
        return None
    a, b = scene.objects
    return (a, rel, b) if rel in ('left of', 'above') else \
        (b, _INVERSE[rel], a)


def _pair(scene: Scene, style: str, with_size: bool) -> Tuple[str, str]:
    """Phrases of the two objects of a position scene, in scene order."""
    return tuple(
        _phrase((o.size, o.color, o.shape, 1), style, with_size)
        for o in scene.objects)


def prompt(scene: Scene, with_size: bool = True) -> str:
    """GenEval-style generation prompt, e.g. ``'a photo of two blue squares'``.

    Args:
        scene (Scene): The scene.
        with_size (bool): Mention object sizes. Defaults to True.

    Returns:
        str: The prompt, without a final full stop (as in GenEval).
    """
    if scene.relation is not None:
        first, second = _pair(scene, 'article', with_size)
        return f'a photo of {first} {scene.relation} {second}'
    return 'a photo of ' + _describe(scene, 'article', with_size)


def captions(scene: Scene, with_size: bool = True) -> List[str]:
    """Different phrasings describing the scene (five; four for two
    objects, named in :func:`reading_order`).

    Args:
        scene (Scene): The scene.
        with_size (bool): Mention object sizes. Defaults to True.

    Returns:
        list[str]: Distinct captions, each ending with a full stop.
    """
    order = reading_order(scene)
    if order is not None:
        first_obj, rel, second_obj = order
        pair = replace(scene, objects=(first_obj, second_obj))
        first, second = _pair(pair, 'article', with_size)
        col_first, col_second = _pair(pair, 'coloured', with_size)
        return [
            f'{first} {rel} {second}.',
            f'there is {first} {_LONG[rel]} {second}.',
            f'an image showing {col_first}, {rel} {col_second}.',
            f'two shapes on a light background, {first} {rel} {second}.',
        ]
    listed = _describe(scene, 'article', with_size)
    total = len(scene.objects)
    verb = 'is' if _groups(scene.objects)[0][3] == 1 else 'are'
    shapes = 'shape' if total == 1 else 'shapes'
    return [
        f'{listed}.',
        f'there {verb} {listed} on a light background.',
        f'an image showing {_describe(scene, "single", with_size)}.',
        f'a picture with {COUNT_WORDS[total - 1]} {shapes}, {listed}.',
        f'{_describe(scene, "number", with_size)} on a light background.',
    ]


def caption(scene: Scene,
            rng: np.random.Generator,
            with_size: bool = True) -> str:
    """One of :func:`captions`, picked by ``rng``."""
    options = captions(scene, with_size)
    return options[int(rng.integers(len(options)))]


def instruction(pair: EditPair, with_size: bool = True) -> str:
    """Edit instruction of a pair, e.g. ``'make the red circle blue'``.

    Existing objects are named by colour and shape, which is unique in an
    edit source; an added object is described in full (with its size if
    ``with_size``) so that the target is determined by the text.
    """
    obj = pair.subject
    name = f'the {obj.color} {obj.shape}'
    if pair.kind == 'recolor':
        return f'make {name} {pair.detail}'
    if pair.kind == 'add':
        return 'add ' + _phrase(
            (obj.size, obj.color, obj.shape, 1), 'article', with_size)
    if pair.kind == 'remove':
        return f'remove {name}'
    if pair.kind == 'move':
        return f'move {name} {_MOVES[pair.detail]}'
    raise ValueError(f'unknown edit kind {pair.kind!r}')


def vocabulary_words() -> List[str]:
    """Every word a prompt, caption or instruction can contain, sorted.

    Punctuation (``.`` and ``,``) is not included; the tokenizer adds it.
    """
    words = set(_TEMPLATE_WORDS) | set(COLORS) | set(SIZES)
    words |= set(SHAPES) | {s + 's' for s in SHAPES} | set(COUNT_WORDS)
    for text in (*RELATIONS, *_LONG.values(), *_MOVES.values(), *DIRECTIONS):
        words |= set(text.split())
    return sorted(words)
