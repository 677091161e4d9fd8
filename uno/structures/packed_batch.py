"""PackedBatch: many samples flattened into one token sequence.

Produced by :func:`uno.structures.packing.pack_sequences` from
:class:`~uno.structures.SequencePlan` s. Every field is a plain tensor so a
reader can follow the data: index tensors select the positions (in ``[0,
L)``) that each expert, input kind and objective works on.
"""
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List

import torch
from torch import Tensor


@dataclass
class PackedBatch:
    """A packed sequence of ``L`` tokens from ``B`` samples.

    Shape:
        - input_ids, position_ids, sample_ids, segment_ids: ``(L,)``
        - segment_full: ``(S,)``; segment_visible: ``(S, S)``
        - und_index, gen_index, text_index: ``(N_*,)`` positions
        - noisy_index / noisy_group / noisy_pos: ``(N_noisy,)``; the group
          is an index into ``noisy_images`` (one entry per noisy image)
        - clean_index / clean_group / clean_pos: same for clean latents
        - vit_index / vit_group / vit_pos: same for understanding images
        - ce_index, ce_labels: ``(N_ce,)`` positions whose output predicts
          ``ce_labels`` (next-token CE)
        - query_index, query_slot: ``(N_q,)`` every metaquery token and
          its slot in ``[0, K)``
        - mq_index, mq_slot, mq_group: ``(N_mq,)`` the supervised
          metaquery tokens, their slot and an index into ``mq_images``
        - images: ``(I, 3, H, W)`` in ``[-1, 1]``
        - noisy_images, clean_images, vit_images, mq_images: ``(I_*,)``
          indices into ``images``
    """
    input_ids: Tensor
    position_ids: Tensor
    sample_ids: Tensor
    segment_ids: Tensor
    segment_full: Tensor
    segment_visible: Tensor
    und_index: Tensor
    gen_index: Tensor
    text_index: Tensor
    noisy_index: Tensor
    noisy_group: Tensor
    noisy_pos: Tensor
    clean_index: Tensor
    clean_group: Tensor
    clean_pos: Tensor
    vit_index: Tensor
    vit_group: Tensor
    vit_pos: Tensor
    ce_index: Tensor
    ce_labels: Tensor
    ce_sample: Tensor
    query_index: Tensor
    query_slot: Tensor
    mq_index: Tensor
    mq_slot: Tensor
    mq_group: Tensor
    images: Tensor
    noisy_images: Tensor
    clean_images: Tensor
    vit_images: Tensor
    mq_images: Tensor
    num_samples: int
    meta: List[Dict[str, Any]] = field(default_factory=list)
    # the data loader's counters behind this batch: samples read (broken
    # included) and broken samples skipped (BrokenSampleHook logs them)
    read: int = 0
    broken: int = 0

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.numel())

    @property
    def device(self) -> torch.device:
        return self.input_ids.device

    def to(self, device) -> 'PackedBatch':
        """Move every tensor to ``device``."""
        moved = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Tensor):
                value = value.to(device, non_blocking=True)
            moved[f.name] = value
        return PackedBatch(**moved)

    def dense_mask(self) -> Tensor:
        """Boolean ``(L, L)`` mask, True where query ``q`` may attend ``k``.

        ``mask[q, k] = visible[seg[q], seg[k]] and (seg[q] != seg[k] or
        full[seg[q]] or k <= q)``. Segments of different samples are never
        visible to each other (``segment_visible`` is block-diagonal).
        """
        seg = self.segment_ids
        vis = self.segment_visible[seg[:, None], seg[None, :]]  # (L, L)
        same = seg[:, None] == seg[None, :]
        pos = torch.arange(seg.numel(), device=seg.device)
        causal = pos[None, :] <= pos[:, None]
        inside = self.segment_full[seg][:, None] | causal
        return vis & (~same | inside)
