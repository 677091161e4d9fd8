"""PyTorch scaled-dot-product attention over the plan's mask.

Runs on CPU and GPU, forward and backward. By default (``blocked=True``)
the packed sequence is attended one sample at a time, batched: queries and
keys are grouped by sample into padded tables (:mod:`.blocks`), so the
work is ``B * L_max**2`` pairs instead of the ``L**2`` of the whole packed
sequence, of which samples never see each other's part. A single-sample
batch, ``blocked=False`` and :meth:`prepare_dense` (the captioner's
decoding steps) use the dense ``(L_q, L_k)`` boolean mask the plan implies
(see :meth:`PackedBatch.dense_mask`).
"""
from typing import Any, Optional

import torch.nn.functional as F
from torch import Tensor

from uno.registry import ATTENTION
from uno.structures import PackedBatch
from .base import AttentionBackend, EagerAttention
from .blocks import SampleBlocks, blocked_attention, sample_blocks


@ATTENTION.register_module(name='sdpa')
class SDPAAttention(AttentionBackend):
    """``F.scaled_dot_product_attention`` over the packed sequence.

    Args:
        blocked (bool): Attend per sample (batched over samples) instead of
            over the dense mask of the whole packed sequence. Same result,
            far fewer masked pairs for batches of many samples. Defaults to
            True.
    """

    def __init__(self, blocked: bool = True):
        super().__init__()
        self.blocked = blocked

    def prepare(self,
                batch: PackedBatch,
                query_index: Optional[Tensor] = None,
                key_index: Optional[Tensor] = None) -> Any:
        if self.blocked and batch.num_samples > 1:
            return sample_blocks(batch, query_index, key_index)
        return super().prepare(batch, query_index, key_index)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, mask: Any) -> Tensor:
        if isinstance(mask, SampleBlocks):
            return blocked_attention(q, k, v, mask)
        q = q.transpose(0, 1).unsqueeze(0)  # (1, H, L_q, d)
        k = k.transpose(0, 1).unsqueeze(0)  # (1, H_kv, L_k, d)
        v = v.transpose(0, 1).unsqueeze(0)  # (1, H_kv, L_k, d)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, enable_gqa=q.shape[1] != k.shape[1])
        return out.squeeze(0).transpose(0, 1)  # (L_q, H, d)


ATTENTION.register_module(name='eager', module=EagerAttention)
