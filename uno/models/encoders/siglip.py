"""transformers' SigLIP vision tower as the understanding encoder.

BAGEL's understanding ViT is SigLIP-so400m/14 (NaViT): it reads the
penultimate layer (it drops the last layer from the config) through the
post-LayerNorm, its patch embedding is a Linear over ``(p, q, c)``-ordered
patch pixels, and its position ids index the top-left ``h x w`` corner of a
``70 x 70`` table (no interpolation). This module wraps a transformers
``SiglipVisionModel`` built from a config dict or loaded from a local
folder, reproduces that read-out for equal-sized image batches, and accepts
BAGEL's Linear patch weights when a state dict is loaded.

The tower sits at ``self.model.vision_model`` so parameter names are
``model.vision_model.{embeddings,encoder,post_layernorm}.*``, the layout of
BAGEL's ``vit_model.vision_model.*`` (transformers 5 flattened
``SiglipVisionModel`` itself, so the extra level is kept here).
"""
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from uno.registry import ENCODERS
from .timm_vit import _channels, check_local_path

POS_EMBED_MODES = ('interpolate', 'crop')


def linear_to_conv_patch_weight(weight: Tensor,
                                patch_size: int,
                                channels: int = 3) -> Tensor:
    """BAGEL's Linear patch weight ``(D, p * p * c)`` -> Conv2d layout.

    BAGEL flattens a patch as ``(p, q, c)`` (``'chpwq->hwpqc'``) and built
    its Linear weight as ``conv.permute(0, 2, 3, 1).reshape(D, -1)``; this
    is the inverse.

    Args:
        weight (Tensor): ``(D, p * p * c)``.
        patch_size (int): ``p``.
        channels (int): ``c``. Defaults to 3.

    Returns:
        Tensor: ``(D, c, p, p)``.
    """
    d = weight.shape[0]
    w = weight.reshape(d, patch_size, patch_size, channels)  # (D, p, q, c)
    return w.permute(0, 3, 1, 2).contiguous()  # (D, c, p, q)


@ENCODERS.register_module()
class SiglipVisionEncoder(nn.Module):
    """Images in ``[-1, 1]`` -> patch tokens of a SigLIP layer.

    Args:
        config (dict, optional): ``SiglipVisionConfig`` fields, e.g.
            ``dict(hidden_size=32, intermediate_size=64,
            num_hidden_layers=2, num_attention_heads=4, image_size=16,
            patch_size=4)``. With ``pretrained``, fields overriding the
            loaded config. Defaults to None.
        pretrained (str, optional): Local folder of a saved
            ``SiglipVisionModel`` or ``SiglipModel`` (``config.json`` and
            weights), loaded with ``local_files_only=True``. Defaults to
            None (random init from ``config``).
        select_layer (int): Encoder layer whose output is returned,
            negative from the end (``-1`` is the last layer). Layers after
            it are dropped. Defaults to -2 (BAGEL).
        use_post_layernorm (bool): Apply the post-LayerNorm to the selected
            layer's output. Defaults to True (BAGEL).
        pos_embed (str): How a grid other than the config's
            ``image_size / patch_size`` square gets position embeddings:
            ``'interpolate'`` (transformers' bicubic resampling) or
            ``'crop'`` (BAGEL's NaViT ids ``row * side + col``, which needs
            the grid to fit the table). Defaults to ``'interpolate'``.
        from_bagel (bool): Shorthand for BAGEL's read-out; sets
            ``pos_embed='crop'``. BAGEL's Linear patch weights load in
            either case. Defaults to False.
        mean (Sequence[float]): Normalisation mean. Defaults to SigLIP's
            ``(0.5, 0.5, 0.5)``, which leaves ``[-1, 1]`` inputs as they are.
        std (Sequence[float]): Defaults to ``(0.5, 0.5, 0.5)``.
    """

    def __init__(self,
                 config: Optional[dict] = None,
                 pretrained: Optional[str] = None,
                 select_layer: int = -2,
                 use_post_layernorm: bool = True,
                 pos_embed: str = 'interpolate',
                 from_bagel: bool = False,
                 mean: Sequence[float] = (0.5, 0.5, 0.5),
                 std: Sequence[float] = (0.5, 0.5, 0.5)):
        super().__init__()
        from transformers import SiglipVisionConfig, SiglipVisionModel
        pos_embed = 'crop' if from_bagel else pos_embed
        if pos_embed not in POS_EMBED_MODES:
            raise ValueError(f'pos_embed={pos_embed!r} is not one of '
                             f'{POS_EMBED_MODES}')
        self.pos_embed = pos_embed
        overrides = dict(config or {})
        if pretrained is not None:
            path = check_local_path(pretrained, 'SiglipVisionEncoder '
                                    'pretrained folder')
            cfg = SiglipVisionConfig.from_pretrained(
                path, local_files_only=True, **overrides)
        elif config is not None:
            cfg = SiglipVisionConfig(**overrides)
        else:
            raise ValueError('SiglipVisionEncoder needs a config or a '
                             'pretrained folder')
        depth = cfg.num_hidden_layers
        index = select_layer + depth if select_layer < 0 else select_layer
        if not 0 <= index < depth:
            raise ValueError(f'select_layer={select_layer} is out of range '
                             f'for a SigLIP of {depth} layers')
        # BAGEL's trick: build only the layers up to the selected one (the
        # checkpoint's later layers are skipped), and no pooling head
        cfg.num_hidden_layers = index + 1
        cfg.vision_use_head = False
        if pretrained is not None:
            # later layers and the head of the checkpoint are skipped;
            # a missing weight would be silently random, so refuse it
            tower, info = SiglipVisionModel.from_pretrained(
                path,
                config=cfg,
                local_files_only=True,
                output_loading_info=True)
            if info['missing_keys']:
                raise RuntimeError(
                    f'{pretrained!r} lacks SigLIP vision weights: '
                    f"{sorted(info['missing_keys'])[:5]}")
        else:
            tower = SiglipVisionModel(cfg)
        if not use_post_layernorm:
            tower.post_layernorm = nn.Identity()
        tower.embeddings.register_load_state_dict_pre_hook(_conv_patch_hook)
        self.model = nn.ModuleDict(dict(vision_model=tower))
        self.register_buffer('mean', _channels(mean), persistent=False)
        self.register_buffer('std', _channels(std), persistent=False)

    @property
    def config(self):
        """The (layer-trimmed) ``SiglipVisionConfig`` of the tower."""
        return self.model.vision_model.config

    @property
    def feature_dim(self) -> int:
        """Width of one output token."""
        return self.config.hidden_size

    @property
    def stride(self) -> int:
        """Pixels per output token side."""
        return self.config.patch_size

    def embed(self, x: Tensor) -> Tensor:
        """Patch plus position embeddings ``(I, N, C)`` of ``(I, 3, H, W)``.
        """
        emb = self.model.vision_model.embeddings
        h, w = x.shape[-2] // emb.patch_size, x.shape[-1] // emb.patch_size
        side = emb.image_size // emb.patch_size
        if self.pos_embed == 'interpolate':
            # transformers resamples only when asked; a native grid is used
            # as is, so the flag only matters for other sizes
            return emb(x, interpolate_pos_encoding=(h, w) != (side, side))
        if h > side or w > side:
            raise ValueError(f'a {h}x{w} patch grid exceeds the {side}x{side}'
                             ' position table (pos_embed=crop)')
        p = emb.patch_embedding(x).flatten(2).transpose(1, 2)  # (I, N, C)
        rows = torch.arange(h, device=x.device)
        cols = torch.arange(w, device=x.device)
        ids = (rows[:, None] * side + cols[None, :]).flatten()  # (N, )
        return p + emb.position_embedding(ids)[None]

    def forward(self, images: Tensor) -> Tensor:
        """Patch tokens of ``images``.

        Args:
            images (Tensor): ``(I, 3, H, W)`` in ``[-1, 1]``; ``H`` and ``W``
                multiples of :attr:`stride`.

        Returns:
            Tensor: ``(I, N, feature_dim)``, ``N = (H / s) * (W / s)``,
            row-major.
        """
        tower = self.model.vision_model
        x = images.float()
        mean, std = self.mean.float(), self.std.float()
        x = ((x + 1) / 2 - mean) / std  # (I, 3, H, W)
        x = x.to(tower.embeddings.patch_embedding.weight.dtype)
        h = self.embed(x)  # (I, N, C)
        # the tower holds layers up to the selected one only
        h = tower.encoder(inputs_embeds=h).last_hidden_state
        return tower.post_layernorm(h)  # (I, N, C)


def _conv_patch_hook(module, state_dict, prefix, *args) -> None:
    """Turn a BAGEL Linear patch weight into the Conv2d layout on load."""
    key = prefix + 'patch_embedding.weight'
    weight = state_dict.get(key)
    if weight is not None and weight.dim() == 2:
        conv = module.patch_embedding
        state_dict[key] = linear_to_conv_patch_weight(weight,
                                                      conv.kernel_size[0],
                                                      conv.in_channels)
