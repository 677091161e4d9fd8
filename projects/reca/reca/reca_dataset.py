"""Reconstruction alignment (RecA) samples over ShapesWorld.

RecA (Xie et al., arXiv 2509.07295) post-trains a unified model to
regenerate an image from the model's own understanding-encoder embeddings
of that image, used as a dense prompt in place of text, with the usual
generation loss. In uno terms a RecA sample is the plan

``[ViT tokens of the clean image x (und, full), noisy latents of x (gen,
noise)]``

and the ordinary ``FlowMatchingObjective`` trains it: the ViT encodes the
clean render (``PackedBatch.vit_images``), the flow objective noises the
same render's latents (``PackedBatch.noisy_images``). No caption, no
prompt, no metaqueries. The paper mixes such samples with ordinary
text-to-image ones; configs do that with a ``MixtureDataset``.
"""
from typing import List, Optional, Union

from uno.datasets.builder import to_tensor_image
from uno.structures.plans import t2i_plan
from uno.datasets.shapesworld_t2i import ShapesWorldBase
from uno.registry import DATASETS
from uno.structures import Segment, SequencePlan


def reca_plan(tokenizer, image: int = 0) -> List[Segment]:
    """RecA: ``[ViT tokens of image (und, full), noisy image (gen, noise)]``.

    Both segments refer to the same plan image: the understanding encoder
    reads it clean, the flow objective noises its latents. By the default
    visibility rule the noisy latents see the ViT tokens and themselves,
    and the ViT tokens (earlier in the sequence) never see the noisy
    latents.

    Args:
        tokenizer: Provides ``vision_start_id`` and ``vision_end_id``.
        image (int): Plan image index of the image to reconstruct.
            Defaults to 0.

    Returns:
        list[Segment]: The two segments.
    """
    markers = (tokenizer.vision_start_id, tokenizer.vision_end_id)
    return [
        Segment('vit', image=image, markers=markers),
        Segment('noisy_latent', image=image, markers=markers, loss=True),
    ]


@DATASETS.register_module()
class ShapesWorldRecADataset(ShapesWorldBase):
    """RecA (image -> same image) plans over ShapesWorld scenes.

    Each index renders one scene, deterministic in ``(seed, split,
    index)`` like the other ShapesWorld datasets, and returns
    :func:`reca_plan` of its render. With probability
    ``condition_dropout`` (decided by the index) the visual condition is
    replaced by an empty text prompt, i.e. an unconditional sample for
    classifier-free guidance.

    Args:
        split (str): ``'train'`` or ``'test'`` (disjoint scene keys).
            Defaults to ``'train'``.
        num_samples (int): Dataset length. Defaults to 10000.
        image_size (int): Render size in pixels. Defaults to 32.
        seed (int): World seed. Defaults to 0.
        tokenizer (dict | object): TOKENIZERS config or instance. Defaults
            to ``dict(type='WordTokenizer')``.
        condition_dropout (float): Probability of an unconditional sample
            (``[<bos><eos>, noisy image]``). Defaults to 0.0: the mixed-in
            text-to-image samples already drop their prompts.
        max_objects (int): Objects per scene at most. Defaults to 4.
    """

    def __init__(self,
                 split: str = 'train',
                 num_samples: int = 10000,
                 image_size: int = 32,
                 seed: int = 0,
                 tokenizer: Optional[Union[dict, object]] = None,
                 condition_dropout: float = 0.0,
                 max_objects: int = 4):
        if not 0 <= condition_dropout <= 1:
            raise ValueError('condition_dropout must be in [0, 1]')
        super().__init__(split, num_samples, image_size, seed, tokenizer,
                         max_objects)
        self.condition_dropout = condition_dropout

    def __getitem__(self, index: int) -> SequencePlan:
        scene = self.world.scene(index, self.split)
        rng = self._rng(index, 19)
        dropped = bool(rng.random() < self.condition_dropout)
        segments = (t2i_plan([], self.tokenizer) if dropped else
                    reca_plan(self.tokenizer))
        image = to_tensor_image(self.world.render(scene))  # (3, H, W)
        return SequencePlan(
            segments=segments,
            images=[image],
            meta=dict(index=index, task='reca', dropped=dropped,
                      tag=scene.tag))
