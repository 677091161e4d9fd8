"""PyTorch ``flex_attention`` with a block-sparse mask from the plan.

``prepare`` builds a :class:`BlockMask` from a ``mask_mod`` that evaluates
the same rule as :meth:`PackedBatch.dense_mask` from the batch's
``segment_ids``, ``segment_full`` and ``segment_visible``, so the
``(L, L)`` boolean matrix is never materialised and fully masked blocks
(other samples, invisible noisy images) are skipped. On CUDA, compile it
(``compile=True``) to get the fused kernel; uncompiled it materialises the
scores like eager attention.

flex_attention has **no backward on the CPU** (torch raises
``NotImplementedError``); :meth:`FlexAttention.forward` refuses CPU inputs
that require grad with an error that names the fix. Its forward matches
SDPA on the CPU, which is what the tests check there. Building the
backend on a CPU-only machine is allowed (sampling and tests run flex
without gradients), so a CPU training run fails at its first step, with
:class:`BackendUnavailableError`: a RuntimeError that the tools report
as one configuration-error line.
"""
from typing import Any, Callable, Optional

import torch
from torch import Tensor

from uno.registry import ATTENTION
from uno.structures import PackedBatch
from uno.errors import BackendUnavailableError, UnoConfigError
from .base import AttentionBackend


def _padded(x: Tensor, multiple: int) -> Tensor:
    """Pad ``x`` ``(N,)`` to a multiple of ``multiple`` with its last
    value, so a compiled ``mask_mod`` never reads past the end in the
    kernel's padded tail blocks."""
    extra = -x.numel() % multiple
    return torch.cat([x, x[-1:].expand(extra)]) if extra else x


@ATTENTION.register_module(name='flex')
class FlexAttention(AttentionBackend):
    """``flex_attention`` over the packed sequence (GQA native).

    Args:
        compile (bool): ``torch.compile`` the attention call and build the
            block masks compiled (what makes flex fast on CUDA; costs a
            compile per new shape). Defaults to False.
        block_size (int): Block-mask tile side. Defaults to 128.
    """
    trains_on_cpu = False

    def __init__(self, compile: bool = False, block_size: int = 128):
        super().__init__()
        try:
            # imported here: the module costs ~1.5 s to import on the CPU
            # machine and only configs that select flex should pay it
            from torch.nn.attention import flex_attention as flex
        except ImportError as err:  # pragma: no cover (torch < 2.5)
            raise UnoConfigError(
                "the 'flex' attention backend needs torch >= 2.5 "
                f'(torch.nn.attention.flex_attention): {err}') from err
        self.compile, self.block_size = compile, block_size
        self._create_block_mask = flex.create_block_mask
        self._flex = (torch.compile(flex.flex_attention)
                      if compile else flex.flex_attention)

    def _block_mask(self, mask_mod: Callable, q_len: int, k_len: int,
                    device) -> Any:
        return self._create_block_mask(
            mask_mod, None, None, q_len, k_len, device=device,
            BLOCK_SIZE=self.block_size, _compile=self.compile)

    def prepare(self,
                batch: PackedBatch,
                query_index: Optional[Tensor] = None,
                key_index: Optional[Tensor] = None) -> Any:
        """A :class:`BlockMask` for queries ``query_index`` over keys
        ``key_index`` (None: every position), by the plan's rule."""
        length, dev = batch.num_tokens, batch.device
        all_pos = torch.arange(length, device=dev)
        q_pos = all_pos if query_index is None else query_index.to(dev)
        k_pos = all_pos if key_index is None else key_index.to(dev)
        q_len, k_len = q_pos.numel(), k_pos.numel()
        num_seg = batch.segment_full.numel()
        q_pos = _padded(q_pos, self.block_size)  # (L_q',)
        k_pos = _padded(k_pos, self.block_size)  # (L_k',)
        q_seg = batch.segment_ids[q_pos]  # (L_q',)
        k_seg = batch.segment_ids[k_pos]  # (L_k',)
        q_full = batch.segment_full[q_seg]  # (L_q',)
        visible = batch.segment_visible.flatten()  # (S * S,)

        def mask_mod(b, h, q_idx, kv_idx):
            sq, sk = q_seg[q_idx], k_seg[kv_idx]
            inside = (sq != sk) | q_full[q_idx] | (k_pos[kv_idx] <=
                                                   q_pos[q_idx])
            return visible[sq * num_seg + sk] & inside

        return self._block_mask(mask_mod, q_len, k_len, dev)

    def prepare_dense(self, mask: Tensor) -> Any:
        """A :class:`BlockMask` reading a boolean ``(L_q, L_k)`` mask."""
        q_len, k_len = mask.shape
        pad_q, pad_k = -q_len % self.block_size, -k_len % self.block_size
        padded = torch.nn.functional.pad(mask, (0, pad_k, 0, pad_q))

        def mask_mod(b, h, q_idx, kv_idx):
            return padded[q_idx, kv_idx]

        return self._block_mask(mask_mod, q_len, k_len, mask.device)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, mask: Any) -> Tensor:
        needs_grad = torch.is_grad_enabled() and (
            q.requires_grad or k.requires_grad or v.requires_grad)
        if q.device.type == 'cpu' and needs_grad:
            raise BackendUnavailableError(
                "the 'flex' attention backend has no backward on the CPU "
                '(torch: FlexAttention does not support backward on CPU); '
                "train with model.attention=dict(type='sdpa') or 'auto', "
                'or run flex under torch.no_grad()')
        if self.compile and q.shape[-1] < 16:
            raise BackendUnavailableError(
                f'compiled flex attention needs a head dim of at least 16 '
                f'(torch inductor), got {q.shape[-1]}: use '
                "dict(type='flex', compile=False) or type='sdpa'")
        q = q.transpose(0, 1).unsqueeze(0)  # (1, H, L_q, d)
        k = k.transpose(0, 1).unsqueeze(0)  # (1, H_kv, L_k, d)
        v = v.transpose(0, 1).unsqueeze(0)  # (1, H_kv, L_k, d)
        out = self._flex(q, k, v, block_mask=mask,
                         enable_gqa=q.shape[1] != k.shape[1])
        return out.squeeze(0).transpose(0, 1)  # (L_q, H, d)
