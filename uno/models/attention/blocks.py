"""Sample blocks: attention over a packed sequence, one block per sample.

Samples of a packed batch never see each other (``segment_visible`` is
block-diagonal), so attention over the whole ``(L, L)`` mask computes
mostly masked pairs: with ``B`` samples of similar length only about
``1 / B`` of the score matrix can be visible. :func:`sample_blocks` groups
the queries and the keys by sample with index tensors (no Python loop over
samples): every sample becomes one row of a ``(B, L_q_max)`` query table and
a ``(B, L_k_max)`` key table, padded to the longest sample, with the plan's
mask inside each block. :func:`blocked_attention` gathers q/k/v into those
tables, runs one batched ``scaled_dot_product_attention`` over ``(B, H,
L_q_max, L_k_max)`` and scatters the outputs back to the packed order. The
work is ``B * L_max**2`` pairs instead of ``L**2``.

Padded query slots attend to key slot 0 of their block (so their softmax
stays finite) and are dropped; since nothing reads them, they send no
gradient. Padded key slots are masked out.
"""
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from uno.structures import PackedBatch


@dataclass
class SampleBlocks:
    """Queries and keys of a packed batch grouped by sample.

    Attributes:
        q_rows (Tensor): ``(B * Lq,)`` query row feeding every slot of the
            ``(B, Lq)`` query table (padding slots read row 0).
        k_rows (Tensor): ``(B * Lk,)`` key row of every key-table slot.
        q_slots (Tensor): ``(L_q,)`` slot of every query row, to scatter
            the outputs back.
        mask (Tensor): ``(B, 1, Lq, Lk)`` boolean, True = may attend.
        shape (tuple[int, int, int]): ``(B, Lq, Lk)``.
    """
    q_rows: Tensor
    k_rows: Tensor
    q_slots: Tensor
    mask: Tensor
    shape: Tuple[int, int, int]


def group_by_sample(sample: Tensor,
                    num_samples: int) -> Tuple[Tensor, Tensor, Tensor, int]:
    """Lay rows out in a ``(B, L_max)`` table, keeping their order.

    Args:
        sample (Tensor): ``(N,)`` sample index of every row.
        num_samples (int): ``B``.

    Returns:
        tuple: ``rows`` ``(B * L_max,)`` the row of every slot (0 for
        padding), ``slots`` ``(N,)`` the slot of every row, ``valid``
        ``(B * L_max,)`` which slots hold a row, and ``L_max``. ``L_max``
        is read on the host (one sync on an accelerator).
    """
    counts = torch.bincount(sample, minlength=num_samples)  # (B,)
    length = max(int(counts.max()), 1) if sample.numel() else 1
    order = torch.argsort(sample, stable=True)  # rows sorted by sample
    starts = torch.cumsum(counts, 0) - counts  # (B,)
    owner = sample[order]
    rank = torch.arange(sample.numel(), device=sample.device) - starts[owner]
    sorted_slots = owner * length + rank  # slot of order[j]
    slots = torch.empty_like(sorted_slots)
    slots[order] = sorted_slots
    rows = torch.zeros(num_samples * length, dtype=torch.long,
                       device=sample.device)
    rows[sorted_slots] = order
    valid = torch.zeros(num_samples * length, dtype=torch.bool,
                        device=sample.device)
    valid[sorted_slots] = True
    return rows, slots, valid, length


def sample_blocks(batch: PackedBatch,
                  query_index: Optional[Tensor] = None,
                  key_index: Optional[Tensor] = None) -> SampleBlocks:
    """Group the queries and keys of ``batch`` by sample.

    The mask inside each block follows :meth:`PackedBatch.dense_mask`.

    Args:
        batch (PackedBatch): The packed batch.
        query_index (Tensor, optional): ``(L_q,)`` positions fed as
            queries, in order; None for all. Defaults to None.
        key_index (Tensor, optional): ``(L_k,)`` positions fed as keys, in
            order (cached prefix first); None for all. Defaults to None.

    Returns:
        SampleBlocks: The tables and the block mask.
    """
    dev, num = batch.device, batch.num_samples
    every = torch.arange(batch.num_tokens, device=dev)
    q_pos = every if query_index is None else query_index.to(dev)
    k_pos = every if key_index is None else key_index.to(dev)
    q_rows, q_slots, q_valid, lq = group_by_sample(
        batch.sample_ids[q_pos], num)
    k_rows, _, k_valid, lk = group_by_sample(batch.sample_ids[k_pos], num)
    qp = q_pos[q_rows].view(num, lq, 1)  # packed position of each slot
    kp = k_pos[k_rows].view(num, 1, lk)
    sq, sk = batch.segment_ids[qp], batch.segment_ids[kp]
    vis = batch.segment_visible[sq, sk]  # (B, Lq, Lk)
    inside = batch.segment_full[sq] | (kp <= qp)
    mask = vis & ((sq != sk) | inside) & k_valid.view(num, 1, lk)
    pad_q = ~q_valid.view(num, lq)
    mask[..., 0] |= pad_q  # padding queries read slot 0, then dropped
    return SampleBlocks(q_rows, k_rows, q_slots, mask.unsqueeze(1),
                        (num, lq, lk))


def blocked_attention(q: Tensor, k: Tensor, v: Tensor,
                      blocks: SampleBlocks) -> Tensor:
    """SDPA over sample blocks.

    Args:
        q (Tensor): ``(L_q, H, d)``.
        k (Tensor): ``(L_k, H_kv, d)``.
        v (Tensor): ``(L_k, H_kv, d)``.
        blocks (SampleBlocks): From :func:`sample_blocks`.

    Returns:
        Tensor: ``(L_q, H, d)`` in the queries' order.
    """
    num, lq, lk = blocks.shape
    heads, dim = q.shape[1], q.shape[2]
    qb = q.index_select(0, blocks.q_rows).view(num, lq, heads, dim)
    kb = k.index_select(0, blocks.k_rows).view(num, lk, k.shape[1], dim)
    vb = v.index_select(0, blocks.k_rows).view(num, lk, v.shape[1], dim)
    out = F.scaled_dot_product_attention(
        qb.transpose(1, 2), kb.transpose(1, 2), vb.transpose(1, 2),
        attn_mask=blocks.mask, enable_gqa=heads != k.shape[1])
    out = out.transpose(1, 2).reshape(num * lq, heads, dim)
    return out.index_select(0, blocks.q_slots)  # (L_q, H, d)


__all__ = ['SampleBlocks', 'sample_blocks', 'blocked_attention',
           'group_by_sample']
