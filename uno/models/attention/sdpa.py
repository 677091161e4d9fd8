"""PyTorch scaled-dot-product attention with a dense boolean mask.

Runs on CPU and GPU, forward and backward. The mask is the ``(L, L)``
boolean matrix the plan implies (see :meth:`PackedBatch.dense_mask`), or
its ``(L_new, L_past + L_new)`` slice when decoding with a KV cache; for
sequences of a few thousand tokens it costs ``L**2`` bytes, which is small
next to the activations.
"""
import torch.nn.functional as F
from torch import Tensor

from uno.registry import ATTENTION
from .base import AttentionBackend, EagerAttention


@ATTENTION.register_module(name='sdpa')
class SDPAAttention(AttentionBackend):
    """``F.scaled_dot_product_attention`` over the packed sequence."""

    def forward(self, q: Tensor, k: Tensor, v: Tensor,
                mask: Tensor) -> Tensor:
        q = q.transpose(0, 1).unsqueeze(0)  # (1, H, L_q, d)
        k = k.transpose(0, 1).unsqueeze(0)  # (1, H_kv, L_k, d)
        v = v.transpose(0, 1).unsqueeze(0)  # (1, H_kv, L_k, d)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, enable_gqa=q.shape[1] != k.shape[1])
        return out.squeeze(0).transpose(0, 1)  # (L_q, H, d)


ATTENTION.register_module(name='eager', module=EagerAttention)
