"""ShapesWorld text-to-image samples as sequence plans.

Each index renders one procedural scene (deterministic from ``seed``,
``split`` and the index) and returns the plan ``[prompt, noisy image]``.
The prompt is dropped (replaced by an empty ``<bos><eos>``) with
probability ``prompt_dropout`` so the model also learns the unconditional
velocity that classifier-free guidance needs; the drop is decided by the
index, so a resumed run sees the same samples.
"""
from typing import Optional, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from uno.registry import DATASETS
from uno.structures import SequencePlan
from uno.structures.plans import UnoPlanOptions, t2i_plan, uno_segments
from .builder import build_tokenizer, to_tensor_image
from .shapesworld import ShapesWorld, token_attributes


class ShapesWorldBase(Dataset):
    """Shared arguments of the ShapesWorld datasets."""

    def __init__(self, split: str, num_samples: int, image_size: int,
                 seed: int, tokenizer, max_objects: int,
                 token_labels: Optional[int] = None):
        self.split, self.num_samples, self.seed = split, num_samples, seed
        self.world = ShapesWorld(
            image_size=image_size, max_objects=max_objects, seed=seed)
        self.tokenizer = build_tokenizer(tokenizer or
                                         dict(type='WordTokenizer'))
        self.image_size, self.token_labels = image_size, token_labels

    def _add_token_labels(self, meta: dict, scene) -> None:
        """``meta['token_labels']`` ``(4, N)``: the image's per-token
        attribute labels for tokens of ``token_labels`` pixels
        (:func:`~uno.datasets.shapesworld.token_attributes`), when asked.
        """
        if self.token_labels:
            meta['token_labels'] = torch.from_numpy(token_attributes(
                scene, self.image_size, self.token_labels))

    def __len__(self) -> int:
        return self.num_samples

    @property
    def metainfo(self) -> dict:
        """What mmengine's loops give evaluators as ``dataset_meta``."""
        return dict(dataset=type(self).__name__, split=self.split,
                    num_samples=self.num_samples, seed=self.seed,
                    image_size=self.image_size)

    def _rng(self, index: int, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, stream, index])

    def _add_uno_segments(self, segments, scene, rng, target_image: int):
        """Append UNO's caption/metaquery segments after the plan's last
        (noisy) segment, when ``self.uno`` asks; return the caption."""
        if not self.uno.enabled:
            return None
        # a re-phrasing of the scene, chosen independently of the prompt
        caption = self._pick_caption(scene, rng)
        segments += uno_segments(
            noisy=len(segments) - 1, caption=self.tokenizer.encode(caption),
            tokenizer=self.tokenizer, options=self.uno,
            target_image=target_image, first_index=len(segments))
        return caption

    def _pick_caption(self, scene, rng) -> str:
        options = self.world.captions(scene)
        return options[rng.integers(len(options))]


@DATASETS.register_module()
class ShapesWorldT2IDataset(ShapesWorldBase):
    """Text-to-image plans over ShapesWorld scenes.

    Args:
        split (str): ``'train'`` or ``'test'`` (disjoint scene keys).
            Defaults to ``'train'``.
        num_samples (int): Length of the dataset. Defaults to 10000.
        image_size (int): Render size in pixels. Defaults to 32.
        seed (int): World seed. Defaults to 0.
        tokenizer (dict | object): TOKENIZERS config or instance. Defaults
            to ``dict(type='WordTokenizer')``.
        prompt_dropout (float): Probability of an empty prompt. Defaults to
            0.1.
        text (str): ``'prompt'`` (GenEval-style) or ``'caption'`` (a random
            one of the scene's phrasings) as the conditioning text.
            Defaults to ``'prompt'``.
        max_objects (int): Objects per scene at most. Defaults to 4.
        token_labels (int, optional): Also give the target image's
            per-token attribute labels for tokens of this many pixels, for
            ``TokenAttributeObjective(view='noisy')``. Defaults to None.
        uno (dict, optional): :class:`UnoPlanOptions`: UNO's caption and
            metaquery segments after the noisy image. Filled from the
            objectives by ``build_runner`` when left out. Defaults to None
            (plain text-to-image).
    """

    def __init__(self,
                 split: str = 'train',
                 num_samples: int = 10000,
                 image_size: int = 32,
                 seed: int = 0,
                 tokenizer: Optional[Union[dict, object]] = None,
                 prompt_dropout: float = 0.1,
                 text: str = 'prompt',
                 max_objects: int = 4,
                 token_labels: Optional[int] = None,
                 uno: Optional[dict] = None):
        if text not in ('prompt', 'caption'):
            raise ValueError(f"text must be 'prompt' or 'caption', got "
                             f'{text!r}')
        if not 0 <= prompt_dropout <= 1:
            raise ValueError('prompt_dropout must be in [0, 1]')
        super().__init__(split, num_samples, image_size, seed, tokenizer,
                         max_objects, token_labels)
        self.prompt_dropout, self.text = prompt_dropout, text
        self.uno = UnoPlanOptions.build(uno)

    def __getitem__(self, index: int) -> SequencePlan:
        scene = self.world.scene(index, self.split)
        rng = self._rng(index, 7)
        text = (self.world.prompt(scene) if self.text == 'prompt' else
                self._pick_caption(scene, rng))
        dropped = rng.random() < self.prompt_dropout
        tokens = [] if dropped else self.tokenizer.encode(text)
        image = to_tensor_image(self.world.render(scene))  # (3, H, W)
        segments = t2i_plan(tokens, self.tokenizer)
        caption = self._add_uno_segments(segments, scene, rng, 0)
        meta = dict(index=index, prompt=text, caption=caption,
                    dropped=bool(dropped), tag=scene.tag)
        self._add_token_labels(meta, scene)
        return SequencePlan(segments=segments, images=[image], meta=meta)
