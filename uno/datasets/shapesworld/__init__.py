"""ShapesWorld: a procedural world of coloured shapes for CPU-scale runs.

Seeded compositional scenes (GenEval-style tags: single object, two
objects, counting, colour attribution, position), crisp renders at 32-64 px,
GenEval-style prompts, several caption phrasings per scene, and edit pairs
(recolor, add, remove, move) with instructions. See DESIGN.md section 4.
The text functions live in :mod:`.captions` (not re-exported here, so that
``shapesworld.captions`` stays the module); :class:`ShapesWorld` wraps them.
"""
from .render import (TOKEN_ATTRIBUTES, render_masks, render_scene,
                     shape_polygon, token_attributes)
from .sampler import SceneSampler
from .scene import (BACKGROUND, COLOR_RGB, COLORS, COUNT_WORDS, DIRECTIONS,
                    EDIT_KINDS, RELATIONS, SHAPES, SIZE_RANGES, SIZES, TAGS,
                    EditPair, Obj, Scene, key_split, scene_key)
from .world import SPLITS, ShapesWorld

__all__ = [
    'ShapesWorld', 'Scene', 'Obj', 'EditPair', 'SceneSampler', 'SHAPES',
    'COLORS', 'SIZES', 'RELATIONS', 'COUNT_WORDS', 'TAGS', 'EDIT_KINDS',
    'DIRECTIONS', 'SPLITS', 'COLOR_RGB', 'BACKGROUND', 'SIZE_RANGES',
    'scene_key', 'key_split', 'render_scene', 'render_masks', 'shape_polygon',
    'token_attributes', 'TOKEN_ATTRIBUTES'
]
