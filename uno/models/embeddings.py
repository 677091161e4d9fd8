"""Input embeddings of latent tokens: timestep and 2-D position.

Both follow BAGEL's ``modeling_utils`` in spirit: a DiT-style sinusoidal
timestep embedding followed by an MLP, and fixed 2-D sin-cos position
embeddings (computed on the fly from the token's (row, col), which equals
BAGEL's fixed table indexed by ``row * max_size + col``).
"""
import math

import torch
from torch import Tensor, nn


def sinusoid(x: Tensor, dim: int, max_period: float = 10000.0,
             sin_first: bool = False) -> Tensor:
    """Sin-cos features of ``x`` ``(N,)`` -> ``(N, dim)``.

    Frequencies ``max_period ** (-k / (dim // 2))``; cos first (DiT's and
    BAGEL's timestep order) unless ``sin_first``.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) *
                      torch.arange(half, device=x.device, dtype=torch.float32)
                      / half)  # (half,)
    args = x.float()[:, None] * freqs[None]  # (N, half)
    pair = [torch.sin(args), torch.cos(args)]
    emb = torch.cat(pair if sin_first else pair[::-1], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimestepEmbedder(nn.Module):
    """``t -> MLP(sinusoid(scale * t))``.

    Args:
        hidden_size (int): Output width ``D``.
        freq_dim (int): Sinusoid width. Defaults to 256.
        scale (float): Multiplier on ``t`` in ``[0, 1]`` before the
            sinusoid. BAGEL uses 1.0; small models learn faster with 1000
            (DiT's convention). Defaults to 1000.0.
    """

    def __init__(self, hidden_size: int, freq_dim: int = 256,
                 scale: float = 1000.0):
        super().__init__()
        self.freq_dim, self.scale = freq_dim, scale
        self.mlp = nn.Sequential(
            nn.Linear(freq_dim, hidden_size), nn.SiLU(),
            nn.Linear(hidden_size, hidden_size))

    def forward(self, t: Tensor) -> Tensor:
        """``t`` ``(N,)`` -> ``(N, D)``."""
        emb = sinusoid(t * self.scale, self.freq_dim)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


def sincos_2d(pos: Tensor, dim: int) -> Tensor:
    """Fixed 2-D position embedding of ``(row, col)`` pairs.

    Laid out as BAGEL's ``PositionEmbedding`` tables (MAE's 2-D sin-cos):
    ``[sin(c w), cos(c w), sin(r w), cos(r w)]`` with ``w_k = 10000 **
    (-k / (dim / 4))``, so BAGEL checkpoints see the positions they were
    trained with.

    Args:
        pos (Tensor): ``(N, 2)`` integer rows and columns.
        dim (int): Output width (the first half encodes columns).

    Returns:
        Tensor: ``(N, dim)`` float32.
    """
    half = dim // 2
    cols = sinusoid(pos[:, 1], half, sin_first=True)
    rows = sinusoid(pos[:, 0], dim - half, sin_first=True)
    return torch.cat([cols, rows], dim=-1)
