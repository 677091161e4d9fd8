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


class LatentGridStem(nn.Module):
    """Convolutions over each image's latent token grid, added to the
    linear ``vae2llm`` embedding (a residual branch, zero at init).

    A linear embedding sees one token: with 4 x 4-pixel latents a
    7-pixel shape spans several tokens, and its outline is left for the
    transformer to assemble. Early convolutions (as in a ViT's
    convolutional stem) let each token's embedding see its neighbours, so
    shape is there from the first layer for both experts to read. The last
    convolution is zero-initialised, so a checkpoint without the stem
    loads and starts from exactly its own function.

    Args:
        in_dim (int): Latent channels ``C``.
        hidden_size (int): Model width ``D``.
        channels (Sequence[int]): Widths of the ``kernel x kernel``
            convolutions (GELU after each); a ``1 x 1`` convolution maps
            the last to ``D``.
        kernel (int): Odd kernel size. Defaults to 3.
    """

    def __init__(self, in_dim: int, hidden_size: int, channels=(128, ),
                 kernel: int = 3):
        super().__init__()
        if not channels or kernel % 2 == 0:
            raise ValueError('latent_stem needs at least one channel width '
                             f'and an odd kernel, got {list(channels)}, '
                             f'{kernel}')
        layers, width = [], in_dim
        for ch in channels:
            layers += [nn.Conv2d(width, ch, kernel, padding=kernel // 2),
                       nn.GELU(approximate='tanh')]
            width = ch
        layers.append(nn.Conv2d(width, hidden_size, 1))
        self.net = nn.Sequential(*layers)
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, latents: Tensor, group: Tensor, pos: Tensor) -> Tensor:
        """Embed tokens given with their image and grid position.

        Args:
            latents (Tensor): ``(N, C)`` tokens of any number of images.
            group (Tensor): ``(N,)`` image of each token.
            pos (Tensor): ``(N, 2)`` row and column of each token.

        Returns:
            Tensor: ``(N, D)``; grid cells no token fills are zeros.
        """
        if latents.shape[0] == 0:
            return latents.new_zeros(0, self.net[-1].out_channels)
        group, rows, cols = group.long(), pos[:, 0].long(), pos[:, 1].long()
        shape = (int(group.max()) + 1, int(rows.max()) + 1,
                 int(cols.max()) + 1, latents.shape[1])
        grid = latents.new_zeros(shape)  # (I, H, W, C)
        grid = grid.index_put((group, rows, cols), latents)
        out = self.net(grid.permute(0, 3, 1, 2))  # (I, D, H, W)
        return out.permute(0, 2, 3, 1)[group, rows, cols]  # (N, D)
