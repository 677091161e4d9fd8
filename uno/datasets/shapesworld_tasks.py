"""ShapesWorld understanding and editing samples as sequence plans.

``ShapesWorldCaptionDataset`` shows a scene to the understanding path
(ViT tokens, or clean latents read by the und expert) and supervises one
of its caption phrasings; ``ShapesWorldEditDataset`` yields BAGEL's edit
plan (clean source latents, source ViT tokens, instruction, noisy target)
plus UNO's caption and metaquery segments of the *target* when asked.
Everything is deterministic in ``(seed, split, index)``.
"""
from typing import Optional, Union

from uno.registry import DATASETS
from uno.structures import SequencePlan
from uno.structures.plans import UnoPlanOptions, caption_plan, edit_plan
from .builder import to_tensor_image
from .shapesworld_t2i import ShapesWorldBase


@DATASETS.register_module()
class ShapesWorldCaptionDataset(ShapesWorldBase):
    """Image -> caption plans over ShapesWorld scenes.

    Args:
        split (str): ``'train'`` or ``'test'``. Defaults to ``'train'``.
        num_samples (int): Dataset length. Defaults to 10000.
        image_size (int): Render size. Defaults to 32.
        seed (int): World seed. Defaults to 0.
        tokenizer (dict | object): TOKENIZERS config or instance.
        latent_fraction (float): Fraction of samples that show the image
            as clean latents (gen expert) instead of ViT tokens, so the
            und expert also learns to read generation tokens. Defaults
            to 0.0.
        max_objects (int): Objects per scene at most. Defaults to 4.
        token_labels (int, optional): Also give the image's per-token
            attribute labels (``meta['token_labels']``, see
            :func:`~uno.datasets.shapesworld.token_attributes`) for tokens
            of this many pixels (ViT or latent view), for
            ``TokenAttributeObjective``.
            Defaults to None.
    """

    def __init__(self,
                 split: str = 'train',
                 num_samples: int = 10000,
                 image_size: int = 32,
                 seed: int = 0,
                 tokenizer: Optional[Union[dict, object]] = None,
                 latent_fraction: float = 0.0,
                 max_objects: int = 4,
                 token_labels: Optional[int] = None):
        super().__init__(split, num_samples, image_size, seed, tokenizer,
                         max_objects, token_labels)
        if not 0 <= latent_fraction <= 1:
            raise ValueError('latent_fraction must be in [0, 1]')
        self.latent_fraction = latent_fraction

    def __getitem__(self, index: int) -> SequencePlan:
        scene = self.world.scene(index, self.split)
        rng = self._rng(index, 11)
        caption = self._pick_caption(scene, rng)
        latent = bool(rng.random() < self.latent_fraction)
        meta = dict(index=index, task='caption', caption=caption,
                    latent=latent, tag=scene.tag, scene=scene)
        self._add_token_labels(meta, scene)  # per ViT or latent token
        return SequencePlan(
            segments=caption_plan(self.tokenizer.encode(caption),
                                  self.tokenizer, latent=latent),
            images=[to_tensor_image(self.world.render(scene))],
            meta=meta)


@DATASETS.register_module()
class ShapesWorldEditDataset(ShapesWorldBase):
    """Edit plans (recolour, add, remove, move) over ShapesWorld.

    Args:
        split (str): ``'train'`` or ``'test'``. Defaults to ``'train'``.
        num_samples (int): Dataset length. Defaults to 10000.
        image_size (int): Render size. Defaults to 32.
        seed (int): World seed. Defaults to 0.
        tokenizer (dict | object): TOKENIZERS config or instance.
        vit (bool): Include the source's ViT tokens (needs a model with an
            und_encoder). Defaults to True.
        instruction_dropout (float): Probability of an empty instruction
            (image-conditioned CFG). Defaults to 0.1.
        uno (dict, optional): :class:`UnoPlanOptions` for the target;
            derived from the objectives when left out. Defaults to None.
        max_objects (int): Objects per scene at most. Defaults to 4.
    """

    def __init__(self,
                 split: str = 'train',
                 num_samples: int = 10000,
                 image_size: int = 32,
                 seed: int = 0,
                 tokenizer: Optional[Union[dict, object]] = None,
                 vit: bool = True,
                 instruction_dropout: float = 0.1,
                 uno: Optional[dict] = None,
                 max_objects: int = 4):
        super().__init__(split, num_samples, image_size, seed, tokenizer,
                         max_objects)
        self.vit, self.instruction_dropout = vit, instruction_dropout
        self.uno = UnoPlanOptions.build(uno)

    def __getitem__(self, index: int) -> SequencePlan:
        pair = self.world.edit(index, self.split)
        rng = self._rng(index, 13)
        dropped = rng.random() < self.instruction_dropout
        tokens = [] if dropped else self.tokenizer.encode(pair.instruction)
        segments = edit_plan(tokens, self.tokenizer, vit=self.vit)
        caption = self._add_uno_segments(segments, pair.target, rng, 1)
        images = [to_tensor_image(self.world.render(s))
                  for s in (pair.source, pair.target)]
        return SequencePlan(
            segments=segments, images=images,
            meta=dict(index=index, task='edit', kind=pair.kind,
                      instruction=pair.instruction, caption=caption,
                      dropped=bool(dropped), pair=pair))
