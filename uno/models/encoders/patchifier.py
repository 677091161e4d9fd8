"""Pixel patchifier: the latent encoder of the CPU world.

Turns an image into non-overlapping ``p x p`` pixel patches, one latent
token each (``3 * p * p`` values), and back. It has no parameters; on
ShapesWorld's flat-coloured images it plays the role a VAE plays for real
photographs, at a cost a 2-core CPU can afford.
"""
from typing import Tuple

import torch
from torch import Tensor, nn

from uno.registry import ENCODERS


@ENCODERS.register_module()
class PixelPatchifier(nn.Module):
    """Images ``(I, C, H, W)`` <-> latent tokens ``(I, N, C * p * p)``.

    Args:
        patch_size (int): Patch side ``p`` in pixels. Defaults to 4.
        in_channels (int): Image channels. Defaults to 3.
    """

    def __init__(self, patch_size: int = 4, in_channels: int = 3):
        super().__init__()
        self.patch_size = patch_size
        self.in_channels = in_channels

    @property
    def latent_dim(self) -> int:
        """Width of one latent token."""
        return self.in_channels * self.patch_size**2

    @property
    def stride(self) -> int:
        """Pixels per latent token side."""
        return self.patch_size

    def encode(self, images: Tensor) -> Tensor:
        """``(I, C, H, W)`` -> ``(I, N, C * p * p)``, row-major patches."""
        p = self.patch_size
        i, c, h, w = images.shape
        x = images.reshape(i, c, h // p, p, w // p, p)
        x = x.permute(0, 2, 4, 1, 3, 5)  # (I, h, w, C, p, p)
        return x.reshape(i, (h // p) * (w // p), c * p * p)

    def decode(self, tokens: Tensor, grid: Tuple[int, int]) -> Tensor:
        """``(I, N, C * p * p)`` -> ``(I, C, H, W)`` for a ``(h, w)`` grid."""
        p, c = self.patch_size, self.in_channels
        gh, gw = grid
        x = tokens.reshape(tokens.shape[0], gh, gw, c, p, p)
        x = x.permute(0, 3, 1, 4, 2, 5)  # (I, C, h, p, w, p)
        return x.reshape(tokens.shape[0], c, gh * p, gw * p)

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        return self.encode(images)
