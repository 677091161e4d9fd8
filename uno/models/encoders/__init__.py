"""Understanding and latent encoders (registry ``ENCODERS``)."""
from .patchifier import PixelPatchifier

__all__ = ['PixelPatchifier']
