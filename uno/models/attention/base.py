"""Interface of the attention backends over one packed sequence.

A backend turns the batch's plan-derived mask description into whatever
it needs once per forward (:meth:`prepare`), then computes attention for
every layer. All backends take and return unbatched packed tensors:
``q`` is ``(L, H, d)``, ``k`` and ``v`` are ``(L, H_kv, d)`` with ``H`` a
multiple of ``H_kv`` (grouped-query attention).
"""
from typing import Any

import torch
from torch import Tensor, nn

from uno.structures import PackedBatch


class AttentionBackend(nn.Module):
    """Base class; subclasses implement :meth:`prepare` and
    :meth:`forward`."""

    #: whether the backend has a backward on the CPU
    trains_on_cpu: bool = True

    def prepare(self, batch: PackedBatch) -> Any:
        """Build the mask representation for ``batch`` (once per step)."""
        return batch.dense_mask()

    def forward(self, q: Tensor, k: Tensor, v: Tensor, mask: Any) -> Tensor:
        raise NotImplementedError


class EagerAttention(AttentionBackend):
    """Reference: explicit softmax over a dense masked score matrix.

    Slow and memory-hungry (``(H, L, L)`` scores); the ground truth the
    other backends are tested against.
    """

    def forward(self, q: Tensor, k: Tensor, v: Tensor,
                mask: Tensor) -> Tensor:
        heads, kv_heads, dim = q.shape[1], k.shape[1], q.shape[2]
        k = k.repeat_interleave(heads // kv_heads, dim=1)  # (L, H, d)
        v = v.repeat_interleave(heads // kv_heads, dim=1)  # (L, H, d)
        scores = torch.einsum('qhd,khd->hqk', q, k) * dim**-0.5  # (H, L, L)
        scores = scores.masked_fill(~mask, float('-inf'))
        probs = scores.float().softmax(-1).to(q.dtype)
        return torch.einsum('hqk,khd->qhd', probs, v)  # (L, H, d)
