"""ShapesWorld: seeded scenes, renders, text and edit pairs in one object.

The world turns ``(seed, split, index)`` into a generator (never the global
RNG), samples a scene or an edit pair with :class:`SceneSampler`, and
redraws until the sample's canonical key hashes to the requested split, so
train and test never share a composition. Rendering and text are delegated
to :mod:`.render` and :mod:`.captions`.
"""
from dataclasses import replace
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from . import captions as _text
from .render import render_masks, render_scene
from .sampler import SceneSampler
from .scene import (BACKGROUND, COLORS, EDIT_KINDS, SHAPES, SIZES, TAG_WEIGHTS,
                    EditPair, Scene, key_split)

SPLITS = ('train', 'test')
_STREAM_SCENE, _STREAM_EDIT = 0, 1
# a draw keeps its scene tag / edit kind for this many redraws, so that
# the split filter does not skew the tag mix; then it draws a new one
_PATIENCE = 100
_MAX_DRAWS = 20_000


def _check_subset(name: str, values: Sequence[str],
                  allowed: Sequence[str]) -> Tuple[str, ...]:
    values = tuple(values)
    bad = [v for v in values if v not in allowed]
    if bad or not values:
        raise ValueError(f'{name} must be a non-empty subset of {allowed}, '
                         f'got {values}')
    return values


class ShapesWorld:
    """Procedural world of flat-coloured shapes.

    Args:
        image_size (int): Side of rendered images in pixels; sizes are
            tuned for 32 to 64. Defaults to 32.
        max_objects (int): Most objects in a scene, 1 to 4. Defaults to 4.
        shapes (Sequence[str]): Subset of :data:`SHAPES`. Defaults to all.
        colors (Sequence[str]): Subset of :data:`COLORS`. Defaults to all.
        sizes (Sequence[str]): Subset of :data:`SIZES`. With one size the
            text never mentions sizes. Defaults to all.
        bg (tuple[int, int, int]): Background RGB. Defaults to
            ``(240, 240, 240)``.
        seed (int): Seed of every sample. Defaults to 0.
        bg_jitter (int): Per-scene uniform background offset per channel;
            0 keeps the background fixed. Defaults to 0.
        test_fraction (float): Fraction of canonical keys held out for the
            ``'test'`` split (independent of ``seed``). Defaults to 0.1.
        tag_weights (dict[str, float], optional): Relative frequency of each
            scene tag. Defaults to :data:`TAG_WEIGHTS` (GenEval's mix).
        edit_kinds (Sequence[str]): Edit kinds to sample, uniformly.
            Defaults to all of :data:`EDIT_KINDS`.

    Example:
        >>> world = ShapesWorld(seed=0)
        >>> scene = world.scene(3, 'train')
        >>> world.render(scene).shape
        (32, 32, 3)
        >>> world.prompt(scene)
        'a photo of a small blue triangle and a small orange diamond'
    """

    def __init__(self,
                 image_size: int = 32,
                 max_objects: int = 4,
                 shapes: Sequence[str] = SHAPES,
                 colors: Sequence[str] = COLORS,
                 sizes: Sequence[str] = SIZES,
                 bg: Tuple[int, int, int] = BACKGROUND,
                 seed: int = 0,
                 bg_jitter: int = 0,
                 test_fraction: float = 0.1,
                 tag_weights: Optional[dict] = None,
                 edit_kinds: Sequence[str] = EDIT_KINDS) -> None:
        if not 16 <= image_size <= 512:
            raise ValueError(f'image_size must be in [16, 512], got '
                             f'{image_size}')
        if not 1 <= max_objects <= 4:
            raise ValueError(f'max_objects must be 1 to 4 (count words stop '
                             f'at four), got {max_objects}')
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f'test_fraction must be in (0, 1), got '
                             f'{test_fraction}')
        if seed < 0:
            raise ValueError(f'seed must be non-negative, got {seed}')
        self.image_size = image_size
        self.max_objects = max_objects
        self.shapes = _check_subset('shapes', shapes, SHAPES)
        self.colors = _check_subset('colors', colors, COLORS)
        self.sizes = _check_subset('sizes', sizes, SIZES)
        self.bg = tuple(int(v) for v in bg)
        self.seed = int(seed)
        self.test_fraction = float(test_fraction)
        self.with_size = len(self.sizes) > 1
        weights = dict(TAG_WEIGHTS if tag_weights is None else tag_weights)
        self.sampler = SceneSampler(image_size, max_objects, self.shapes,
                                    self.colors, self.sizes, self.bg,
                                    bg_jitter, weights)
        kinds = _check_subset('edit_kinds', edit_kinds, EDIT_KINDS)
        # add needs room for one more object, remove must leave one
        self.edit_kinds = tuple(
            k for k in kinds if max_objects >= 2 or k in ('recolor', 'move'))

    # --- sampling ------------------------------------------------------------
    def _rng(self, index: int, split: str, stream: int) -> np.random.Generator:
        if split not in SPLITS:
            raise ValueError(f'split must be one of {SPLITS}, got {split!r}')
        if index < 0:
            raise ValueError(f'index must be non-negative, got {index}')
        # scenes use [seed, split, index]; other streams append their id
        entropy = [self.seed, SPLITS.index(split), int(index)]
        return np.random.default_rng(entropy + [stream] if stream else entropy)

    def split_of(self, key: str) -> str:
        """Split (``'train'`` or ``'test'``) of a canonical key."""
        return key_split(key, self.test_fraction)

    def scene(self, index: int, split: str = 'train') -> Scene:
        """The ``index``-th scene of ``split``, deterministic in the seed.

        Args:
            index (int): Sample index, non-negative.
            split (str): ``'train'`` or ``'test'``. Defaults to 'train'.

        Returns:
            Scene: A scene whose key belongs to ``split``.
        """
        rng = self._rng(index, split, _STREAM_SCENE)
        for draw in range(_MAX_DRAWS):
            if draw % _PATIENCE == 0:
                tag = self.sampler.sample_tag(rng)
            scene = self.sampler.sample(
                rng, tag, lambda key: self.split_of(key) == split)
            if scene is not None:
                return scene
        raise RuntimeError(f'no {split} scene found in {_MAX_DRAWS} draws')

    def edit(self, index: int, split: str = 'train') -> EditPair:
        """The ``index``-th edit pair of ``split``, deterministic in the seed.

        The pair's key (source key and instruction) decides its split.

        Args:
            index (int): Sample index, non-negative.
            split (str): ``'train'`` or ``'test'``. Defaults to 'train'.

        Returns:
            EditPair: Source, target, kind, instruction and changed region.
        """
        if not self.edit_kinds:
            raise ValueError('no edit kind is possible with this config')
        rng = self._rng(index, split, _STREAM_EDIT)

        def accept(draft: EditPair) -> bool:
            return self.split_of(self._instructed(draft).key) == split

        for draw in range(_MAX_DRAWS):
            if draw % _PATIENCE == 0:
                kind = self.edit_kinds[rng.integers(len(self.edit_kinds))]
            pair = self.sampler.sample_edit(rng, kind, accept)
            if pair is not None:
                return self._instructed(pair)
        raise RuntimeError(f'no {split} edit found in {_MAX_DRAWS} draws')

    def _instructed(self, pair: EditPair) -> EditPair:
        return replace(
            pair, instruction=_text.instruction(pair, self.with_size))

    # --- pixels --------------------------------------------------------------
    def render(self,
               scene: Scene,
               image_size: Optional[int] = None) -> np.ndarray:
        """Render ``scene``; ``(S, S, 3)`` uint8, S defaults to image_size."""
        return render_scene(scene, image_size or self.image_size)

    def masks(self,
              scene: Scene,
              image_size: Optional[int] = None) -> np.ndarray:
        """Per-object bool masks ``(N, S, S)``; S defaults to image_size."""
        return render_masks(scene, image_size or self.image_size)

    # --- text ----------------------------------------------------------------
    def prompt(self, scene: Scene) -> str:
        """GenEval-style prompt, e.g. ``'a photo of a red circle'``."""
        return _text.prompt(scene, self.with_size)

    def captions(self, scene: Scene) -> List[str]:
        """Different phrasings describing ``scene``."""
        return _text.captions(scene, self.with_size)

    def caption(self,
                scene: Scene,
                rng: Union[np.random.Generator, int, None] = None) -> str:
        """One caption of ``scene``, picked by ``rng`` (a Generator or seed).

        None picks with the generator of seed 0, i.e. deterministically.
        """
        if not isinstance(rng, np.random.Generator):
            rng = np.random.default_rng(rng or 0)
        return _text.caption(scene, rng, self.with_size)

    @classmethod
    def words(cls) -> List[str]:
        """Every word any prompt, caption or instruction can contain, sorted.

        It covers the full vocabulary whatever a world's subsets are, so
        tokenizer ids do not depend on the world's configuration.
        """
        return _text.vocabulary_words()
