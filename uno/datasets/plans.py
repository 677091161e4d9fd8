"""Sequence plans of each task, built from token ids and image indices.

These are the only places where the segment order of a task is written
down; datasets call them, objectives and masks follow from them.
"""
from typing import List, Sequence

from uno.structures import Segment


def text_segment(tokens: Sequence[int], tokenizer, kind: str = 'text',
                 loss: bool = False, **kwargs) -> Segment:
    """``<bos> tokens <eos>`` as a text or caption segment."""
    ids = [tokenizer.bos_id] + list(tokens) + [tokenizer.eos_id]
    return Segment(kind, tokens=ids, loss=loss, **kwargs)


def t2i_plan(prompt: Sequence[int], tokenizer, image: int = 0) -> List[Segment]:
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
