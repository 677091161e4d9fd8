"""ShapesWorld scenes: vocabulary, dataclasses and canonical keys.

A scene is a few flat-coloured shapes on a plain background, stored in
normalised coordinates (fractions of the image side) so that one scene
renders at any resolution (:mod:`.sampler` draws them). A scene is
identified by a canonical key, what its text states and never its pixel
positions, and the train/test split is a fixed hash of that key.
"""
import hashlib
import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

SHAPES = ('circle', 'square', 'triangle', 'diamond', 'star')
COLORS = ('red', 'green', 'blue', 'yellow', 'purple', 'orange')
SIZES = ('small', 'large')
RELATIONS = ('left of', 'right of', 'above', 'below')
# the count word of n objects is COUNT_WORDS[n - 1]
COUNT_WORDS = ('one', 'two', 'three', 'four')
# scene types, named after the GenEval tags they mirror
TAGS = ('single_object', 'two_object', 'counting', 'color_attr', 'position')
EDIT_KINDS = ('recolor', 'add', 'remove', 'move')
DIRECTIONS = ('left', 'right', 'up', 'down')

# Flat colours, pairwise >= 90 apart in RGB and far from light backgrounds,
# so nearest-colour classification of a rendered pixel is unambiguous.
COLOR_RGB = {
    'red': (215, 35, 35),
    'green': (40, 170, 60),
    'blue': (40, 80, 220),
    'yellow': (235, 225, 35),
    'purple': (150, 60, 190),
    'orange': (250, 135, 25),
}
BACKGROUND = (240, 240, 240)
# Diameter (side of the bounding square) as a fraction of the image side.
# Box sides are odd (every shape is symmetric about its centre pixel): at
# 32 px a small shape is always 7 px and a large one 11 px wide (a 9 px
# "large" would be too close to small); at 64 px, 13-15 and 21-23 px.
SIZE_RANGES = {'small': (0.20, 0.24), 'large': (0.32, 0.36)}
# GenEval's prompt counts per tag. Its 'colors' prompts (one object of a
# stated colour) are single objects here, because every shape has a colour.
TAG_WEIGHTS = {
    'single_object': 80 + 94,
    'two_object': 99,
    'counting': 80,
    'color_attr': 100,
    'position': 100,
}
_CANONICAL = {'right of': 'left of', 'below': 'above'}
#: the relation of B to A when A <relation> B holds
INVERSE_RELATION = {
    'left of': 'right of',
    'right of': 'left of',
    'above': 'below',
    'below': 'above',
}


@dataclass(frozen=True)
class Obj:
    """One shape of a scene.

    Args:
        shape (str): One of :data:`SHAPES`.
        color (str): One of :data:`COLORS`.
        size (str): One of :data:`SIZES`.
        cx (float): Centre x as a fraction of the image width.
        cy (float): Centre y as a fraction of the image height.
        radius (float): Half the side of the bounding square, as a fraction
            of the image side.
    """

    shape: str
    color: str
    size: str
    cx: float
    cy: float
    radius: float

    @property
    def descriptor(self) -> str:
        """``'size color shape'``, the object's part of a canonical key."""
        return f'{self.size} {self.color} {self.shape}'

    def box(self, image_size: int) -> Tuple[int, int, int, int]:
        """Pixel box ``(x0, y0, x1, y1)`` (ends exclusive) at a resolution.

        The box is a square of odd side ``2k + 1`` centred on the pixel that
        contains the centre, so shapes are symmetric and a shape's pixel size
        does not depend on where it is.
        """
        k = max(1, math.floor(self.radius * image_size))
        px = min(math.floor(self.cx * image_size), image_size - 1)
        py = min(math.floor(self.cy * image_size), image_size - 1)
        return (px - k, py - k, px + k + 1, py + k + 1)


def scene_key(objects: Sequence[Obj], relation: Optional[str] = None) -> str:
    """Canonical key of a scene: its object multiset and relation.

    Positions are left out, and ``'B right of A'`` is written as
    ``'A left of B'`` (likewise below/above), so two scenes that a prompt
    cannot tell apart share a key and therefore a split.
    """
    descs = [o.descriptor for o in objects]
    if relation is None:
        return ' + '.join(sorted(descs))
    first, second = descs
    if relation in _CANONICAL:
        first, second = second, first
        relation = _CANONICAL[relation]
    return f'{first} {relation} {second}'


def key_split(key: str, test_fraction: float) -> str:
    """``'test'`` for a fixed ``test_fraction`` of keys, else ``'train'``.

    blake2b, unlike ``hash()``, is stable across processes, and the split
    does not depend on the world's seed, so benchmarks stay comparable.
    """
    digest = hashlib.blake2b(key.encode('utf-8'), digest_size=8).digest()
    bucket = int.from_bytes(digest, 'little') % 1_000_000
    return 'test' if bucket < test_fraction * 1_000_000 else 'train'


@dataclass(frozen=True)
class Scene:
    """A ShapesWorld scene.

    Args:
        objects (tuple[Obj, ...]): The shapes; they never overlap.
        tag (str): Scene type, one of :data:`TAGS`, or ``'edit'`` for the
            scenes of an :class:`EditPair`.
        relation (str, optional): For ``'position'`` scenes, the relation
            that holds as ``objects[0] <relation> objects[1]``. Defaults to
            None.
        bg (tuple[int, int, int]): Background RGB. Defaults to
            :data:`BACKGROUND`.
    """

    objects: Tuple[Obj, ...]
    tag: str
    relation: Optional[str] = None
    bg: Tuple[int, int, int] = BACKGROUND

    @property
    def key(self) -> str:
        """Canonical key, see :func:`scene_key`."""
        return scene_key(self.objects, self.relation)


@dataclass(frozen=True)
class EditPair:
    """A source scene, an instruction and the edited target scene.

    Args:
        source (Scene): Scene before the edit.
        target (Scene): Scene after it; unedited objects are identical.
        kind (str): One of :data:`EDIT_KINDS`.
        instruction (str): E.g. ``'make the red circle blue'``.
        region (tuple[int, int, int, int]): ``(x0, y0, x1, y1)`` pixel box
            (ends exclusive, at the world's image size) of the changed
            area: the union of the edited object's boxes before and after.
        subject (Obj): The edited object as in the source (as in the
            target for ``'add'``).
        detail (str): The new colour (recolor), the direction (move), or
            ``''``.
    """

    source: Scene
    target: Scene
    kind: str
    instruction: str
    region: Tuple[int, int, int, int]
    subject: Optional[Obj] = None
    detail: str = ''

    @property
    def key(self) -> str:
        """Canonical key: the source's key and the instruction."""
        return f'{self.source.key} | {self.instruction}'


def object_relations(scene: Scene) -> Tuple[Optional[str], ...]:
    """Each object's spatial relation to the other one of a two-object scene.

    A position scene's objects hold its own relation (``objects[0]
    <relation> objects[1]``) and its inverse; any other two-object scene's
    hold the relation along the axis on which their centres are further
    apart (ties: horizontal). Scenes of any other object count relate
    nothing (``None`` per object). Captions state the first object's
    relation; the understanding encoder's dense labels carry both.
    """
    if len(scene.objects) != 2:
        return (None, ) * len(scene.objects)
    if scene.relation is not None:
        first = scene.relation
    else:
        a, b = scene.objects
        dx, dy = b.cx - a.cx, b.cy - a.cy  # image y grows downwards
        if abs(dx) >= abs(dy):
            first = 'left of' if dx > 0 else 'right of'
        else:
            first = 'above' if dy > 0 else 'below'
    return first, INVERSE_RELATION[first]
