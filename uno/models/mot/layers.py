"""Building blocks of a Qwen2/Llama decoder layer, in plain PyTorch.

Numerically these follow ``transformers``' Qwen2/Llama modules (RMSNorm
in fp32, SwiGLU, rotate-half RoPE) so that the MoT decoder with identical
experts reproduces ``Qwen2ForCausalLM``/``LlamaForCausalLM`` exactly.
"""
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RMSNorm(nn.Module):
    """Root-mean-square LayerNorm, computed in fp32.

    Args:
        dim (int): Normalised width.
        eps (float): Epsilon. Defaults to 1e-6.
    """

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class SwiGLU(nn.Module):
    """``down(silu(gate(x)) * up(x))``, no biases."""

    def __init__(self, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class RotaryEmbedding(nn.Module):
    """1-D rotary position embedding (rotate-half convention).

    Args:
        head_dim (int): Per-head width (even).
        theta (float): Base. Defaults to 10000.0.
    """

    def __init__(self, head_dim: int, theta: float = 10000.0):
        super().__init__()
        inv_freq = 1.0 / (theta**(
            torch.arange(0, head_dim, 2, dtype=torch.int64).float() /
            head_dim))
        self.register_buffer('inv_freq', inv_freq, persistent=False)
        self.theta, self.head_dim = theta, head_dim

    @torch.no_grad()
    def forward(self, position_ids: Tensor,
                dtype: torch.dtype) -> Tuple[Tensor, Tensor]:
        """Return ``(cos, sin)`` of shape ``(L, head_dim)``."""
        # in fp32 even after model.to(bf16), which would round the buffer
        inv_freq = 1.0 / (self.theta**(torch.arange(
            0, self.head_dim, 2, device=position_ids.device).float() /
                                        self.head_dim))
        freqs = position_ids.float()[:, None] * inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)  # (L, head_dim)
        return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate ``x`` of shape ``(L, H, d)`` by ``cos``/``sin`` ``(L, d)``.

    The result keeps ``x``'s dtype, so q and k stay in v's dtype under
    autocast (fused attention kernels refuse mixed dtypes).
    """
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return (x * cos[:, None, :] + rotated * sin[:, None, :]).to(x.dtype)
