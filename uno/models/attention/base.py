"""Interface of the attention backends over one packed sequence.

A backend turns the batch's plan-derived mask description into whatever
it needs once per forward (:meth:`prepare`), then computes attention for
every layer. All backends take and return unbatched packed tensors:
``q`` is ``(L_q, H, d)``, ``k`` and ``v`` are ``(L_k, H_kv, d)`` with ``H``
a multiple of ``H_kv`` (grouped-query attention). In training
``L_q == L_k == L``; with a KV cache (:mod:`uno.models.sampling`) the
queries are the ``L_new`` new tokens and the keys are the ``L_past``
cached tokens followed by the new ones, under a ``(L_new, L_past +
L_new)`` mask built by :meth:`prepare` with ``query_index`` and
``key_index``.
"""
from typing import Any, Optional

import torch
from torch import Tensor, nn

from uno.structures import PackedBatch


class AttentionBackend(nn.Module):
    """Base class; subclasses implement :meth:`forward` and, when they do
    not consume a dense boolean mask, :meth:`prepare_dense` (and maybe a
    faster :meth:`prepare`)."""

    #: whether the backend has a backward on the CPU
    trains_on_cpu: bool = True

    def prepare(self,
                batch: PackedBatch,
                query_index: Optional[Tensor] = None,
                key_index: Optional[Tensor] = None) -> Any:
        """Build the mask representation for ``batch`` (once per step).

        Args:
            batch (PackedBatch): The packed batch the mask derives from.
            query_index (Tensor, optional): ``(L_q,)`` positions of the
                batch that are queries, in the order they are fed; None
                for all. Defaults to None.
            key_index (Tensor, optional): ``(L_k,)`` positions that are
                keys, in the order they are fed (cached prefix first);
                None for all. Defaults to None.

        Returns:
            The backend's mask for ``(L_q, L_k)`` attention.
        """
        mask = batch.dense_mask()  # (L, L)
        if query_index is not None:
            mask = mask.index_select(0, query_index)
        if key_index is not None:
            mask = mask.index_select(1, key_index)
        return self.prepare_dense(mask)

    def prepare_dense(self, mask: Tensor) -> Any:
        """Convert a boolean ``(L_q, L_k)`` mask (True = may attend) into
        the backend's representation; for callers that build the mask
        themselves (the captioner's decoding steps)."""
        return mask

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
        k = k.repeat_interleave(heads // kv_heads, dim=1)  # (L_k, H, d)
        v = v.repeat_interleave(heads // kv_heads, dim=1)  # (L_k, H, d)
        scores = torch.einsum('qhd,khd->hqk', q, k) * dim**-0.5
        scores = scores.masked_fill(~mask, float('-inf'))  # (H, L_q, L_k)
        probs = scores.float().softmax(-1).to(q.dtype)
        return torch.einsum('hqk,khd->qhd', probs, v)  # (L_q, H, d)
