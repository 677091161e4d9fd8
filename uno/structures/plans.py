"""Sequence plans of each task, built from token ids and image indices.

These are the only places where the segment order of a task is written
down; datasets call them, objectives and masks follow from them.
"""
from dataclasses import dataclass, fields
from typing import List, Optional, Sequence, Union

from .sequence_plan import Segment
from uno.errors import UnoConfigError
from uno.utils.config_check import check_keys


def text_segment(tokens: Sequence[int], tokenizer, kind: str = 'text',
                 loss: bool = False, **kwargs) -> Segment:
    """``<bos> tokens <eos>`` as a text or caption segment."""
    ids = [tokenizer.bos_id] + list(tokens) + [tokenizer.eos_id]
    return Segment(kind, tokens=ids, loss=loss, **kwargs)


def t2i_plan(prompt: Sequence[int], tokenizer,
             image: int = 0) -> List[Segment]:
    """Text-to-image: ``[prompt (und, causal), noisy image (gen, noise)]``.

    Args:
        prompt (Sequence[int]): Prompt token ids without specials; empty
            for a classifier-free-guidance drop.
        tokenizer: Provides ``bos_id``, ``eos_id``, ``vision_start_id``,
            ``vision_end_id``.
        image (int): Index of the target image in the plan. Defaults to 0.
    """
    markers = (tokenizer.vision_start_id, tokenizer.vision_end_id)
    return [
        text_segment(prompt, tokenizer),
        Segment('noisy_latent', image=image, markers=markers, loss=True),
    ]


def edit_plan(instruction: Sequence[int], tokenizer, source: int = 0,
              target: int = 1, vit: bool = True) -> List[Segment]:
    """Editing (BAGEL's plan): ``[clean source latents (gen, full), source
    ViT tokens (und, full), instruction (und, causal), noisy target (gen,
    noise)]``.

    Args:
        instruction (Sequence[int]): Instruction ids without specials.
        tokenizer: Provides the special ids.
        source (int): Plan image index of the source. Defaults to 0.
        target (int): Plan image index of the target. Defaults to 1.
        vit (bool): Include the source's understanding tokens (needs a
            model with an und_encoder). Defaults to True.
    """
    markers = (tokenizer.vision_start_id, tokenizer.vision_end_id)
    segments = [Segment('clean_latent', image=source, markers=markers)]
    if vit:
        segments.append(Segment('vit', image=source, markers=markers))
    segments += [
        text_segment(instruction, tokenizer),
        Segment('noisy_latent', image=target, markers=markers, loss=True),
    ]
    return segments


def caption_plan(caption: Sequence[int], tokenizer, image: int = 0,
                 prompt: Optional[Sequence[int]] = None,
                 latent: bool = False) -> List[Segment]:
    """Understanding: ``[image (und ViT, or clean latents), (prompt),
    caption (CE)]``.

    Args:
        caption (Sequence[int]): Target caption ids without specials.
        tokenizer: Provides the special ids.
        image (int): Plan image index. Defaults to 0.
        prompt (Sequence[int], optional): A question before the caption.
            Defaults to None.
        latent (bool): Show the image as clean latents (gen expert)
            instead of ViT tokens. Defaults to False.
    """
    markers = (tokenizer.vision_start_id, tokenizer.vision_end_id)
    kind = 'clean_latent' if latent else 'vit'
    segments = [Segment(kind, image=image, markers=markers)]
    if prompt is not None:
        segments.append(text_segment(prompt, tokenizer))
    segments.append(text_segment(caption, tokenizer, kind='caption',
                                 loss=True))
    return segments


@dataclass
class UnoPlanOptions:
    """Which UNO segments follow a noisy image.

    Filled by ``build_runner`` from the configured objectives (a caption
    objective asks for ``caption``, a regression objective for
    metaqueries) and the model's metaquery count, so configs state each
    choice once.

    Args:
        caption (bool): Append a caption segment read from the noisy
            image. Defaults to False.
        num_queries (int): Metaquery tokens to append (0: none). Defaults
            to 0.
        queries_see_caption (bool): Metaqueries also see the caption.
            Defaults to False.
    """
    caption: bool = False
    num_queries: int = 0
    queries_see_caption: bool = False

    @classmethod
    def build(cls, options: Optional[Union[dict, 'UnoPlanOptions']]):
        if options is None:
            return cls()
        if isinstance(options, cls):
            return options
        check_keys(options, [f.name for f in fields(cls)], 'UNO plan option')
        opts = cls(**options)
        if opts.num_queries < 0:
            raise UnoConfigError('num_queries must be >= 0')
        return opts

    @property
    def enabled(self) -> bool:
        return self.caption or self.num_queries > 0


def uno_segments(noisy: int, caption: Optional[Sequence[int]], tokenizer,
                 options: UnoPlanOptions, target_image: int,
                 first_index: int) -> List[Segment]:
    """UNO's understanding segments after the noisy image ``noisy``.

    Both see the noisy image and nothing before it (prompt masking): the
    caption causally, the metaqueries fully among themselves (and the
    caption if ``queries_see_caption``).

    Args:
        noisy (int): Index of the noisy-latent segment in the plan.
        caption (Sequence[int], optional): Caption token ids (no
            specials); required when ``options.caption``.
        tokenizer: Provides the special ids.
        options (UnoPlanOptions): What to append.
        target_image (int): Image whose features metaqueries regress.
        first_index (int): Plan index the first appended segment gets.
    """
    segments: List[Segment] = []
    caption_index = None
    if options.caption:
        if caption is None:
            raise ValueError('UNO captioning needs a caption for the image')
        caption_index = first_index
        segments.append(
            text_segment(caption, tokenizer, kind='caption', loss=True,
                         sees=(noisy, )))
    if options.num_queries > 0:
        sees = (noisy, )
        if options.queries_see_caption and caption_index is not None:
            sees = (noisy, caption_index)
        segments.append(
            Segment('metaquery', num_queries=options.num_queries, sees=sees,
                    loss=True, target_image=target_image))
    return segments
