"""xFormers ``memory_efficient_attention`` with the plan's mask as a bias.

UNO's mask is not block-diagonal over samples (caption and metaquery
segments see the noisy image but not the prompt), so none of xFormers'
structured ``fmha.attn_bias`` types is exact in general. For correctness
the plan's boolean mask is converted into an additive bias tensor
(``0`` where a query may attend, ``-inf`` elsewhere), which xFormers'
CUTLASS kernels accept in forward and backward.

xFormers is CUDA-only and an optional extra; it is imported when the
backend is built, never when this module is imported.
"""
from typing import Any, Dict

import torch
from torch import Tensor

from uno.registry import ATTENTION
from uno.errors import UnoConfigError
from .base import AttentionBackend

INSTALL_HINT = ("the 'xformers' attention backend needs CUDA and the "
                "xformers extra: pip install -e '.[xformers]'")


def import_xformers_ops():
    """Return ``xformers.ops`` or raise :class:`UnoConfigError`."""
    if not torch.cuda.is_available():
        raise UnoConfigError(f'{INSTALL_HINT} (CUDA is not available)')
    try:
        import xformers.ops as xops
    except Exception as err:  # ImportError or a broken _C extension
        raise UnoConfigError(
            f'{INSTALL_HINT} (import failed: {err})') from err
    return xops


class XFormersMask:
    """A boolean ``(L_q, L_k)`` mask and its additive biases per dtype.

    The bias is laid out in a ``(1, 1, L_q, ceil8(L_k))`` buffer and
    sliced back to ``L_k`` columns: xFormers needs the row stride of a
    bias tensor to be a multiple of 8.
    """

    def __init__(self, mask: Tensor):
        self.mask = mask
        self._bias: Dict[torch.dtype, Tensor] = {}

    def bias(self, dtype: torch.dtype, heads: int) -> Tensor:
        """Additive bias ``(1, H, L_q, L_k)`` in ``dtype``."""
        if dtype not in self._bias:
            q_len, k_len = self.mask.shape
            buf = torch.zeros(1, 1, q_len, k_len + (-k_len % 8),
                              dtype=dtype, device=self.mask.device)
            bias = buf[..., :k_len]  # (1, 1, L_q, L_k), aligned rows
            bias.masked_fill_(~self.mask, float('-inf'))
            self._bias[dtype] = bias
        bias = self._bias[dtype]
        return bias.expand(1, heads, bias.shape[2], bias.shape[3])


@ATTENTION.register_module(name='xformers')
class XFormersAttention(AttentionBackend):
    """``xformers.ops.memory_efficient_attention`` over the packed
    sequence, masked by an additive bias (CUDA only)."""
    trains_on_cpu = False

    def __init__(self):
        super().__init__()
        self._xops = import_xformers_ops()

    def prepare_dense(self, mask: Tensor) -> Any:
        return XFormersMask(mask)

    def forward(self, q: Tensor, k: Tensor, v: Tensor,
                mask: XFormersMask) -> Tensor:
        heads, kv_heads = q.shape[1], k.shape[1]
        # GQA by repetition: the BMHK path with a tensor bias has no
        # grouped-head layout
        k = k.repeat_interleave(heads // kv_heads, dim=1)  # (L_k, H, d)
        v = v.repeat_interleave(heads // kv_heads, dim=1)  # (L_k, H, d)
        out = self._xops.memory_efficient_attention(
            q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0),
            attn_bias=mask.bias(q.dtype, heads))  # (1, L_q, H, d)
        return out.squeeze(0)  # (L_q, H, d)
