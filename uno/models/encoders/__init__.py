"""Understanding and latent encoders (registry ``ENCODERS``)."""
from .patchifier import PixelPatchifier
from .siglip import SiglipVisionEncoder
from .timm_vit import TimmViTEncoder
from .vae import AutoencoderKLEncoder

__all__ = [
    'PixelPatchifier', 'TimmViTEncoder', 'SiglipVisionEncoder',
    'AutoencoderKLEncoder'
]
