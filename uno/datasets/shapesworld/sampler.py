"""Seeded sampling of ShapesWorld scenes and edit pairs.

Sampling is a pure function of a numpy ``Generator`` (the world derives it
from seed, split and index). Object placements are checked on the integer
pixel boxes at the world's image size, so the guarantees a detector relies
on (every shape inside the image, at least ``MARGIN_PX`` empty pixels
between any two shapes) hold exactly there. Text-level choices (shapes,
colours, sizes, relation, edit subject) are drawn before placement so that
a split filter on the canonical key rejects a draw cheaply.
"""
from dataclasses import replace
from functools import partial
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from .scene import (DIRECTIONS, RELATIONS, SIZE_RANGES, EditPair, Obj, Scene,
                    scene_key)

MARGIN_PX = 2  # empty pixels between the boxes of any two shapes
BORDER_PX = 1  # empty pixels between a box and the image edge
# minimum centre separation of a position relation and of a move, and the
# maximum off-axis offset of a position relation (fractions of the side)
MIN_SHIFT = 0.25
MAX_OFF_AXIS = 0.0625
_PLACE_TRIES = 200
_POSITION_TRIES = 30


def _union(a: Sequence[int], b: Sequence[int]) -> Tuple[int, int, int, int]:
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


class SceneSampler:
    """Samples scenes and edit pairs from a numpy generator.

    Args:
        image_size (int): Side in pixels at which placements are checked.
        max_objects (int): Most objects in a scene (2 to 4).
        shapes, colors, sizes (Sequence[str]): Vocabulary subsets to use.
        bg (tuple[int, int, int]): Background RGB.
        bg_jitter (int): If positive, each scene's background is ``bg``
            plus a uniform offset in ``[-bg_jitter, bg_jitter]`` per channel.
        tag_weights (dict[str, float]): Relative frequency per scene tag.
    """

    def __init__(self, image_size: int, max_objects: int,
                 shapes: Sequence[str], colors: Sequence[str],
                 sizes: Sequence[str], bg: Tuple[int, int, int],
                 bg_jitter: int, tag_weights: Dict[str, float]) -> None:
        self.image_size = image_size
        self.max_objects = max_objects
        self.shapes = tuple(shapes)
        self.colors = tuple(colors)
        self.sizes = tuple(sizes)
        self.bg = tuple(bg)
        self.bg_jitter = bg_jitter
        self.pairs = [(s, c) for s in self.shapes for c in self.colors]
        tags = [t for t, w in tag_weights.items() if w > 0 and self._ok(t)]
        if not tags:
            raise ValueError('no scene tag can be sampled with this config')
        weights = np.array([tag_weights[t] for t in tags], dtype=np.float64)
        self.tags = tuple(tags)
        self.tag_probs = weights / weights.sum()

    def _ok(self, tag: str) -> bool:
        """Whether this vocabulary and object budget allow ``tag``."""
        two = self.max_objects >= 2
        return {
            'single_object': True,
            'two_object': two and len(self.shapes) >= 2,
            'counting': two,
            'color_attr': (two and len(self.shapes) >= 2
                           and len(self.colors) >= 2),
            'position': two and len(self.pairs) >= 2,
        }[tag]

    def sample_tag(self, rng: np.random.Generator) -> str:
        return self.tags[rng.choice(len(self.tags), p=self.tag_probs)]

    def sample(
            self,
            rng: np.random.Generator,
            tag: str,
            accept: Optional[Callable[[str], bool]] = None) -> Optional[Scene]:
        """Sample a scene of ``tag``.

        Args:
            rng (np.random.Generator): Source of randomness.
            tag (str): Scene type, one of :data:`TAGS`.
            accept (Callable[[str], bool], optional): Filter on the
                canonical key, applied before placement (the costly part).
                Defaults to None (accept all).

        Returns:
            Scene | None: None if rejected or if placement failed.
        """
        pick = partial(self._pick, rng)
        relation = None
        if tag == 'single_object':
            specs = [(pick(self.shapes), pick(self.colors))]
        elif tag == 'counting':
            n = int(rng.integers(2, self.max_objects + 1))
            specs = [(pick(self.shapes), pick(self.colors))] * n
        elif tag in ('two_object', 'color_attr'):
            shapes = rng.choice(len(self.shapes), 2, replace=False)
            if tag == 'color_attr':
                colors = rng.choice(len(self.colors), 2, replace=False)
            else:
                colors = rng.integers(len(self.colors), size=2)
            specs = [(self.shapes[s], self.colors[c])
                     for s, c in zip(shapes, colors)]
        elif tag == 'position':
            idx = rng.choice(len(self.pairs), 2, replace=False)
            specs = [self.pairs[i] for i in idx]
            relation = pick(RELATIONS)
        else:
            raise ValueError(f'unknown scene tag {tag!r}')
        if tag == 'counting':
            size = pick(self.sizes)
            sizes = [size] * len(specs)
        else:
            sizes = [pick(self.sizes) for _ in specs]
        objs = [self._obj(rng, s, c, z) for (s, c), z in zip(specs, sizes)]
        if accept is not None and not accept(scene_key(objs, relation)):
            return None
        placed = self._place(rng, objs, relation)
        if placed is None:
            return None
        return Scene(placed, tag, relation, self._bg(rng))

    def sample_edit(
        self,
        rng: np.random.Generator,
        kind: str,
        accept: Optional[Callable[[EditPair],
                                  bool]] = None) -> Optional[EditPair]:
        """Sample an edit pair of ``kind`` with an empty instruction.

        Source objects have distinct (shape, colour) pairs, so
        ``'the red circle'`` names one object.

        Args:
            rng (np.random.Generator): Source of randomness.
            kind (str): One of :data:`EDIT_KINDS`.
            accept (Callable[[EditPair], bool], optional): Filter applied
                before placement to a draft pair whose source objects,
                ``subject`` and ``detail`` are final but unplaced (its
                target is empty). Defaults to None (accept all).

        Returns:
            EditPair | None: None if rejected or if this draw admits no
            such edit (the caller draws again).
        """
        low, high = {
            'add': (1, self.max_objects - 1),
            'remove': (2, self.max_objects)
        }.get(kind, (1, self.max_objects))
        n = int(rng.integers(low, high + 1))
        idx = rng.choice(len(self.pairs), n, replace=False)
        objs = [
            self._obj(rng, *self.pairs[j], self._pick(rng, self.sizes))
            for j in idx
        ]
        i = int(rng.integers(n))
        subject, detail = objs[i], ''
        if kind == 'recolor':
            taken = {o.color for o in objs if o.shape == subject.shape}
            free = [c for c in self.colors if c not in taken]
            if not free:
                return None
            detail = self._pick(rng, free)
        elif kind == 'add':
            used = {(o.shape, o.color) for o in objs}
            free = [p for p in self.pairs if p not in used]
            if not free:
                return None
            subject = self._obj(rng, *self._pick(rng, free),
                                self._pick(rng, self.sizes))
        elif kind == 'move':
            detail = self._pick(rng, DIRECTIONS)
        elif kind != 'remove':
            raise ValueError(f'unknown edit kind {kind!r}')
        empty = Scene((), 'edit')
        if accept is not None and not accept(
                EditPair(
                    Scene(tuple(objs), 'edit'), empty, kind, '',
                    (0, 0, 0, 0), subject, detail)):
            return None
        placed = self._place(rng, objs)
        if placed is None:
            return None
        source = Scene(placed, 'edit', None, self._bg(rng))
        size = self.image_size
        if kind != 'add':
            subject = placed[i]
        before, after = placed[:i], placed[i + 1:]
        if kind == 'recolor':
            objects = before + (replace(subject, color=detail), ) + after
            region = subject.box(size)
        elif kind == 'add':
            subject = self._place_one(rng, subject, placed)
            if subject is None:
                return None
            objects, region = placed + (subject, ), subject.box(size)
        elif kind == 'remove':
            objects, region = before + after, subject.box(size)
        else:
            moved = self._place_one(rng, subject, before + after, detail)
            if moved is None:
                return None
            objects = before + (moved, ) + after
            region = _union(subject.box(size), moved.box(size))
        target = Scene(objects, 'edit', None, source.bg)
        return EditPair(source, target, kind, '', region, subject, detail)

    # --- helpers -----------------------------------------------------------
    @staticmethod
    def _pick(rng: np.random.Generator, seq: Sequence):
        return seq[int(rng.integers(len(seq)))]

    def _bg(self, rng: np.random.Generator) -> Tuple[int, int, int]:
        if self.bg_jitter <= 0:
            return self.bg
        offset = rng.integers(-self.bg_jitter, self.bg_jitter + 1, size=3)
        return tuple(int(v) for v in np.clip(np.add(self.bg, offset), 0, 255))

    def _obj(self, rng: np.random.Generator, shape: str, color: str,
             size: str) -> Obj:
        """An object of a sampled diameter, centred until placed."""
        low, high = SIZE_RANGES[size]
        return Obj(shape, color, size, 0.5, 0.5,
                   float(rng.uniform(low, high)) / 2)

    def _fits(self, obj: Obj, others: Sequence[Obj]) -> bool:
        """Inside the image with a border and apart from all ``others``."""
        s, m = self.image_size, MARGIN_PX
        x0, y0, x1, y1 = obj.box(s)
        if min(x0, y0) < BORDER_PX or max(x1, y1) > s - BORDER_PX:
            return False
        for o in others:
            a0, b0, a1, b1 = o.box(s)
            if not (a1 + m <= x0 or x1 + m <= a0 or b1 + m <= y0
                    or y1 + m <= b0):
                return False
        return True

    def _uniform_xy(self, rng: np.random.Generator,
                    obj: Obj) -> Tuple[float, float]:
        low = obj.radius + BORDER_PX / self.image_size
        return tuple(float(v) for v in rng.uniform(low, 1 - low, size=2))

    def _place(self,
               rng: np.random.Generator,
               objs: Sequence[Obj],
               relation: Optional[str] = None) -> Optional[Tuple[Obj, ...]]:
        """Random non-overlapping positions; None after too many tries.

        With a ``relation`` (two objects) the second is drawn relative to
        the first so that the relation is unambiguous: centres at least
        ``MIN_SHIFT`` apart along its axis, at most ``MAX_OFF_AXIS`` across.
        """
        for _ in range(_PLACE_TRIES):
            placed = []
            for obj in objs:
                if relation is not None and placed:
                    cand = self._related(rng, placed[0], obj, relation)
                else:
                    cx, cy = self._uniform_xy(rng, obj)
                    cand = replace(obj, cx=cx, cy=cy)
                if cand is None or not self._fits(cand, placed):
                    break
                placed.append(cand)
            else:
                return tuple(placed)
        return None

    def _related(self, rng: np.random.Generator, first: Obj, obj: Obj,
                 relation: str) -> Optional[Obj]:
        """``obj`` placed so that ``first <relation> obj`` holds."""
        low = obj.radius + BORDER_PX / self.image_size
        horizontal = relation in ('left of', 'right of')
        along, across = ('cx', 'cy') if horizontal else ('cy', 'cx')
        start = getattr(first, along)
        if relation in ('left of', 'above'):  # obj is right of / below
            lo, hi = max(low, start + MIN_SHIFT), 1 - low
        else:
            lo, hi = low, min(1 - low, start - MIN_SHIFT)
        if lo >= hi:
            return None
        off = getattr(first, across) + rng.uniform(-MAX_OFF_AXIS, MAX_OFF_AXIS)
        # clipping keeps the object inside and only shrinks the offset
        coords = {
            along: float(rng.uniform(lo, hi)),
            across: float(np.clip(off, low, 1 - low))
        }
        return replace(obj, **coords)

    def _place_one(self,
                   rng: np.random.Generator,
                   obj: Obj,
                   others: Sequence[Obj],
                   direction: Optional[str] = None) -> Optional[Obj]:
        """Place ``obj`` among fixed ``others``, or move it ``direction``.

        A move keeps the off-axis coordinate and shifts the centre by at
        least ``MIN_SHIFT`` so that "to the left" is unambiguous.
        """
        low = obj.radius + BORDER_PX / self.image_size
        for _ in range(_POSITION_TRIES):
            if direction is None:
                cx, cy = self._uniform_xy(rng, obj)
                cand = replace(obj, cx=cx, cy=cy)
            else:
                along = 'cx' if direction in ('left', 'right') else 'cy'
                start = getattr(obj, along)
                if direction in ('left', 'up'):
                    lo, hi = low, start - MIN_SHIFT
                else:
                    lo, hi = start + MIN_SHIFT, 1 - low
                if lo >= hi:
                    return None
                cand = replace(obj, **{along: float(rng.uniform(lo, hi))})
            if self._fits(cand, others):
                return cand
        return None
