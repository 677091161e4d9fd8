"""diffusers' AutoencoderKL as the latent encoder (BAGEL's FLUX VAE).

``encode`` maps images to the posterior mean (or a sample, as BAGEL
does), normalises it as ``(z - shift) * scale`` and groups ``p x p``
latent pixels into one token, flattened in BAGEL's ``(p, q, c)`` order
(``'chpwq->hwpqc'``), so a FLUX VAE with ``p = 2`` gives 64-dim tokens that
each cover 16 x 16 pixels and BAGEL's ``vae2llm`` weights read them
unchanged. ``decode`` inverts every step.

Weights load from a local diffusers folder (``config.json`` plus weights,
or such a folder under ``vae/``), or from a single ``.safetensors`` /
``.pth`` file together with ``config`` (the architecture). A single file
may use diffusers names or LDM/BFL names (FLUX's ``ae.safetensors``); the
latter are converted with diffusers' own single-file converter.
"""
import os
from typing import Optional, Tuple, Union

import torch
from torch import Tensor, nn

from uno.registry import ENCODERS
from .timm_vit import check_local_path

#: the FLUX.1 VAE (``black-forest-labs/FLUX.1-dev``, ``vae/config.json``)
FLUX_VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=('DownEncoderBlock2D', ) * 4,
    up_block_types=('UpDecoderBlock2D', ) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=16,
    norm_num_groups=32,
    sample_size=1024,
    scaling_factor=0.3611,
    shift_factor=0.1159,
    force_upcast=True,
    mid_block_add_attention=True,
    use_quant_conv=False,
    use_post_quant_conv=False)

#: a 2x-downsampling toy VAE for tests: 4 channels, 16 x 16 images
TINY_VAE_CONFIG = dict(
    down_block_types=('DownEncoderBlock2D', ) * 2,
    up_block_types=('UpDecoderBlock2D', ) * 2,
    block_out_channels=(8, 16),
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=4,
    sample_size=16)

PRESETS = dict(flux=FLUX_VAE_CONFIG, tiny=TINY_VAE_CONFIG)


@ENCODERS.register_module()
class AutoencoderKLEncoder(nn.Module):
    """Images ``(I, 3, H, W)`` <-> VAE latent tokens ``(I, N, C * p * p)``.

    Args:
        config (dict | str, optional): ``AutoencoderKL`` config fields, or
            a preset name (``'flux'``, ``'tiny'``). Required with a
            single-file ``pretrained``; ignored with a folder. Defaults to
            None.
        pretrained (str, optional): Local diffusers folder, or a single
            weights file. Defaults to None (random init from ``config``).
        scaling_factor (float, optional): Latent scale. Defaults to the
            VAE config's ``scaling_factor``.
        shift_factor (float, optional): Latent shift. Defaults to the VAE
            config's ``shift_factor`` (0 when unset).
        patch_size (int): Latent pixels per token side. Defaults to 2.
        sample_posterior (bool): Sample the posterior (BAGEL) instead of
            taking its mean. Defaults to False.
    """

    def __init__(self,
                 config: Optional[Union[dict, str]] = None,
                 pretrained: Optional[str] = None,
                 scaling_factor: Optional[float] = None,
                 shift_factor: Optional[float] = None,
                 patch_size: int = 2,
                 sample_posterior: bool = False):
        super().__init__()
        from diffusers import AutoencoderKL
        if isinstance(config, str):
            if config not in PRESETS:
                raise ValueError(f'unknown VAE preset {config!r}; expected '
                                 f'one of {sorted(PRESETS)}')
            config = PRESETS[config]
        if pretrained is not None:
            self.vae = _load(pretrained, config)
        elif config is not None:
            self.vae = AutoencoderKL(**config)
        else:
            raise ValueError('AutoencoderKLEncoder needs a config or a '
                             'pretrained path')
        self.vae.eval()
        cfg = self.vae.config
        if scaling_factor is None:
            scaling_factor = cfg.scaling_factor
        if shift_factor is None:
            shift_factor = cfg.get('shift_factor') or 0.0
        self.scaling_factor = float(scaling_factor)
        self.shift_factor = float(shift_factor)
        self.patch_size = patch_size
        self.sample_posterior = sample_posterior

    @property
    def latent_channels(self) -> int:
        """Channels of the VAE latent."""
        return self.vae.config.latent_channels

    @property
    def latent_dim(self) -> int:
        """Width of one latent token."""
        return self.latent_channels * self.patch_size**2

    @property
    def stride(self) -> int:
        """Pixels per latent token side (VAE downsampling times ``p``)."""
        down = 2**(len(self.vae.config.block_out_channels) - 1)
        return down * self.patch_size

    def patchify(self, z: Tensor) -> Tensor:
        """``(I, C, h * p, w * p)`` -> ``(I, h * w, p * p * C)``, BAGEL order.
        """
        p = self.patch_size
        i, c, hp, wp = z.shape
        z = z.reshape(i, c, hp // p, p, wp // p, p)  # (I, C, h, p, w, q)
        z = z.permute(0, 2, 4, 3, 5, 1)  # (I, h, w, p, q, C)
        return z.reshape(i, (hp // p) * (wp // p), p * p * c)

    def unpatchify(self, tokens: Tensor, grid: Tuple[int, int]) -> Tensor:
        """``(I, h * w, p * p * C)`` -> ``(I, C, h * p, w * p)``."""
        p, c = self.patch_size, self.latent_channels
        (h, w), i = grid, tokens.shape[0]
        z = tokens.reshape(i, h, w, p, p, c)
        z = z.permute(0, 5, 1, 3, 2, 4)  # (I, C, h, p, w, q)
        return z.reshape(i, c, h * p, w * p)

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """Normalised latent tokens of ``images``.

        Args:
            images (Tensor): ``(I, 3, H, W)`` in ``[-1, 1]``, ``H`` and ``W``
                multiples of :attr:`stride`.

        Returns:
            Tensor: ``(I, N, latent_dim)``, row-major, in ``images``' dtype.
        """
        dist = self.vae.encode(images.to(self.vae.dtype)).latent_dist
        z = dist.sample() if self.sample_posterior else dist.mean
        z = (z - self.shift_factor) * self.scaling_factor  # (I, C, h, w)
        return self.patchify(z).to(images.dtype)  # (I, N, C * p * p)

    def decode(self, tokens: Tensor, grid: Tuple[int, int]) -> Tensor:
        """Images of latent tokens.

        Args:
            tokens (Tensor): ``(I, N, latent_dim)`` normalised latents.
            grid (tuple[int, int]): Token grid ``(h, w)``, ``N = h * w``.

        Returns:
            Tensor: ``(I, 3, h * stride, w * stride)``, roughly in
            ``[-1, 1]`` (not clamped), in ``tokens``' dtype.
        """
        z = self.unpatchify(tokens, grid)  # (I, C, h * p, w * p)
        z = z / self.scaling_factor + self.shift_factor
        return self.vae.decode(z.to(self.vae.dtype)).sample.to(tokens.dtype)

    def forward(self, images: Tensor) -> Tensor:
        return self.encode(images)


def _load(path: str, config: Optional[dict]):
    """An ``AutoencoderKL`` from a local folder or a single file."""
    from diffusers import AutoencoderKL
    path = check_local_path(path, 'AutoencoderKLEncoder pretrained weights')
    if os.path.isdir(path):
        sub = None
        if not os.path.isfile(os.path.join(path, 'config.json')):
            sub = 'vae'  # a pipeline folder
            if not os.path.isfile(os.path.join(path, sub, 'config.json')):
                raise FileNotFoundError(
                    f'{path!r} has no config.json (nor vae/config.json); '
                    'expected a diffusers AutoencoderKL folder')
        return AutoencoderKL.from_pretrained(
            path, subfolder=sub, local_files_only=True)
    if config is None:
        raise ValueError(
            f'{path!r} is a single weights file: give the VAE architecture '
            "too, as config=dict(...) or a preset such as config='flux'")
    vae = AutoencoderKL(**config)
    if path.endswith('.safetensors'):
        from safetensors.torch import load_file
        state = load_file(path)
    else:
        state = torch.load(path, map_location='cpu', weights_only=True)
        state = state.get('state_dict', state)
    if not any(k.startswith('encoder.down_blocks.') for k in state):
        # LDM / BFL names (FLUX ae.safetensors): diffusers' own converter
        from diffusers.loaders.single_file_utils import \
            convert_ldm_vae_checkpoint
        state = convert_ldm_vae_checkpoint(state, vae.config)
    vae.load_state_dict(state, strict=True)
    return vae
