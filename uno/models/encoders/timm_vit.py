"""A timm VisionTransformer as the understanding encoder.

This is the understanding encoder of the CPU world: a tiny ViT built from
a config dict (random init, then trained), or a named timm architecture
whose weights come from a *local* file. Nothing is ever downloaded
(``pretrained=False`` is always passed to timm). The output is the patch
tokens of one block (prefix tokens such as the class token dropped),
row-major, optionally through the final norm. Blocks after the selected
one are pruned, as BAGEL does for its penultimate-layer SigLIP, so no
parameter is left unused.
"""
import os
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from uno.registry import ENCODERS


def check_local_path(path: str, what: str) -> str:
    """Return ``path`` if it exists, else raise a clear FileNotFoundError.

    Args:
        path (str): A local file or folder.
        what (str): What the path should hold, for the message.

    Returns:
        str: ``path`` with ``~`` expanded.
    """
    full = os.path.expanduser(str(path))
    if not os.path.exists(full):
        raise FileNotFoundError(
            f'{what}: no such local file or folder: {path!r} (nothing is '
            'downloaded; give a path on this machine)')
    return full


@ENCODERS.register_module()
class TimmViTEncoder(nn.Module):
    """Images in ``[-1, 1]`` -> patch tokens of a timm ViT block.

    Args:
        model_name (str, optional): A timm ViT architecture name, built with
            ``pretrained=False``. Ignored when ``config`` is given.
            Defaults to ``'vit_tiny_patch16_224'``.
        config (dict, optional): ``VisionTransformer`` keyword arguments,
            e.g. ``dict(img_size=32, patch_size=4, embed_dim=64, depth=2,
            num_heads=4)``. Defaults to None.
        pretrained (str, optional): Local ``.safetensors`` or ``.pth``
            weights, filtered by timm's ViT ``checkpoint_filter_fn``
            (position embeddings are resampled to ``img_size``). Defaults
            to None (random init).
        img_size (int, optional): Input size the position embedding is
            built for; other sizes are interpolated on the fly
            (``dynamic_img_size``). Defaults to the model's own.
        select_layer (int): Block whose output is returned; negative
            counts from the end (BAGEL uses ``-2``). Defaults to -1.
        final_norm (bool): Apply the model's final norm to the selected
            block's output. Defaults to True.
        normalize (bool): Map ``[-1, 1]`` inputs to the model's expected
            ``(x - mean) / std`` range. Defaults to True.
        mean (Sequence[float], optional): Defaults to the timm
            ``pretrained_cfg`` mean, else ``(0.5, 0.5, 0.5)``.
        std (Sequence[float], optional): Defaults to the timm
            ``pretrained_cfg`` std, else ``(0.5, 0.5, 0.5)``.
        conv_stem (Sequence[int], optional): Replace the linear patch
            embedding by a convolutional stem with these widths ("early
            convolutions", Xiao et al. 2021): a stride-1 3x3 convolution
            to the first width, then one stride-2 3x3 convolution per
            further width (``log2(patch_size)`` of them), then a 1x1
            projection to the ViT width. Small shapes split across patches
            are learnt far faster. Defaults to None (timm's patch
            embedding).
    """

    def __init__(self,
                 model_name: Optional[str] = 'vit_tiny_patch16_224',
                 config: Optional[dict] = None,
                 pretrained: Optional[str] = None,
                 img_size: Optional[int] = None,
                 select_layer: int = -1,
                 final_norm: bool = True,
                 normalize: bool = True,
                 mean: Optional[Sequence[float]] = None,
                 std: Optional[Sequence[float]] = None,
                 conv_stem: Optional[Sequence[int]] = None):
        super().__init__()
        # timm imports torchvision: import it only when a ViT is built
        import timm
        from timm.models.vision_transformer import VisionTransformer
        kwargs = dict(num_classes=0, global_pool='', dynamic_img_size=True)
        if img_size is not None:
            kwargs['img_size'] = img_size
        if config is not None:
            self.model = VisionTransformer(**dict(kwargs, **config))
        elif model_name is not None:
            self.model = timm.create_model(
                model_name, pretrained=False, **kwargs)
        else:
            raise ValueError('TimmViTEncoder needs a model_name or a config')
        if conv_stem is not None:
            self.model.patch_embed.proj = conv_stem_layers(
                list(conv_stem), self.stride, self.model.embed_dim)
        if pretrained is not None:
            self.load_pretrained(pretrained)
        depth = len(self.model.blocks)
        index = select_layer + depth if select_layer < 0 else select_layer
        if not 0 <= index < depth:
            raise ValueError(f'select_layer={select_layer} is out of range '
                             f'for a ViT of depth {depth}')
        self.select_layer = index
        # pruning must follow the weight loading: checkpoints hold all blocks
        self.model.prune_intermediate_layers([index],
                                             prune_norm=not final_norm,
                                             prune_head=True)
        cfg = getattr(self.model, 'pretrained_cfg', None) or {}
        mean = mean if mean is not None else cfg.get('mean', (0.5, ) * 3)
        std = std if std is not None else cfg.get('std', (0.5, ) * 3)
        self.normalize = normalize
        self.register_buffer('mean', _channels(mean), persistent=False)
        self.register_buffer('std', _channels(std), persistent=False)

    def load_pretrained(self, path: str) -> None:
        """Load local timm ViT weights; classifier-head keys are skipped.

        Args:
            path (str): A ``.safetensors`` or ``.pth`` file.
        """
        from timm.models import load_state_dict
        from timm.models.vision_transformer import checkpoint_filter_fn
        path = check_local_path(path, 'TimmViTEncoder pretrained weights')
        state = checkpoint_filter_fn(load_state_dict(path), self.model)
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        unexpected = [k for k in unexpected if not k.startswith('head')]
        if missing or unexpected:
            raise RuntimeError(
                f'{path} does not fit this ViT: missing keys {missing[:5]}, '
                f'unexpected keys {unexpected[:5]}')

    @property
    def feature_dim(self) -> int:
        """Width of one output token."""
        return self.model.embed_dim

    @property
    def stride(self) -> int:
        """Pixels per output token side."""
        ph, pw = self.model.patch_embed.patch_size
        if ph != pw:
            raise ValueError(f'non-square patches {ph}x{pw} are unsupported')
        return ph

    def forward(self, images: Tensor) -> Tensor:
        """Patch tokens of ``images``.

        Args:
            images (Tensor): ``(I, 3, H, W)`` in ``[-1, 1]``; ``H`` and ``W``
                multiples of :attr:`stride`.

        Returns:
            Tensor: ``(I, N, feature_dim)`` with ``N = (H / s) * (W / s)``,
            row-major, no class or register tokens.
        """
        x = images.float()
        if self.normalize:
            mean, std = self.mean.float(), self.std.float()
            x = ((x + 1) / 2 - mean) / std  # (I, 3, H, W)
        x = x.to(next(self.model.patch_embed.parameters()).dtype)
        # blocks after the selected one are pruned, so this is its output
        x = self.model.forward_features(x)  # (I, P + N, C)
        return x[:, self.model.num_prefix_tokens:]  # (I, N, C)


def conv_stem_layers(widths: Sequence[int], stride: int,
                     embed_dim: int) -> nn.Sequential:
    """A convolutional patch embedding: ``(I, 3, H, W)`` ->
    ``(I, embed_dim, H / stride, W / stride)``.

    Args:
        widths (Sequence[int]): Channels of the stride-1 convolution, then
            of each stride-2 convolution; ``2 ** (len(widths) - 1)`` must
            equal ``stride``.
        stride (int): The ViT's patch size.
        embed_dim (int): The ViT's width.
    """
    if not widths or 2 ** (len(widths) - 1) != stride:
        raise ValueError(
            f'conv_stem={list(widths)} gives stride '
            f'{2 ** max(len(widths) - 1, 0)}, the patch size is {stride}: '
            f'give 1 + log2({stride}) widths')
    layers, cin = [], 3
    for k, width in enumerate(widths):
        layers += [nn.Conv2d(cin, width, 3, stride=1 if k == 0 else 2,
                             padding=1),
                   nn.GroupNorm(1, width), nn.GELU()]
        cin = width
    layers.append(nn.Conv2d(cin, embed_dim, 1))
    return nn.Sequential(*layers)


def _channels(values: Sequence[float]) -> Tensor:
    return torch.tensor(list(values), dtype=torch.float32).view(1, -1, 1, 1)
