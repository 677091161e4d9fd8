"""Visual regression: metaqueries regress the clean image's features.

``K`` learnable metaquery tokens follow the noisy latents; the *frozen*
understanding expert processes them (reading the noisy image, not the
prompt), a small trainable projector maps their outputs to the
understanding encoder's feature space, and the loss pulls them to the
frozen encoder's features of the *clean* image resampled to ``K`` tokens.
The gradient reaches the generation expert through attention, asking its
noisy-image representation to carry what the understanding encoder sees
("structural details" in the paper's words). The projector follows REPA's
MLP (sihyun-yu/REPA); the resampling, the loss and K are config choices
because the paper does not publish them.
"""
import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from uno.models.outputs import ModelOutputs
from uno.registry import OBJECTIVES
from uno.structures import NoisyLatents, PackedBatch
from uno.errors import UnoConfigError
from .base import BaseObjective, ObjectiveResult, check_window, window_mask

LOSSES = ('mse', 'cosine', 'smooth_l1')
RESAMPLE = ('pool', 'interpolate', 'none')
SPACES = ('encoder', 'connector')


def resample_tokens(feats: Tensor, k: int, mode: str = 'pool') -> Tensor:
    """Resample a square grid of tokens to ``k`` tokens.

    Args:
        feats (Tensor): ``(I, N, C)`` row-major tokens of a square grid.
        k (int): Target count; a perfect square keeps the 2-D layout,
            anything else resamples the flattened sequence.
        mode (str): ``'pool'`` (adaptive average), ``'interpolate'``
            (bilinear / linear) or ``'none'`` (one query per token: ``k``
            must equal the token count). Defaults to ``'pool'``.

    Returns:
        Tensor: ``(I, k, C)``.

    Raises:
        UnoConfigError: ``'none'`` with ``k`` other than the token count.
    """
    i, n, c = feats.shape
    if mode == 'none':
        if k != n:
            raise UnoConfigError(
                f"objectives.regression.resample='none' needs one "
                f'metaquery per understanding token: set '
                f'model.metaquery.num_queries={n} (got {k})')
        return feats
    side, kside = math.isqrt(n), math.isqrt(k)
    if side * side == n and kside * kside == k:
        grid = feats.transpose(1, 2).reshape(i, c, side, side)
        if mode == 'pool':
            out = F.adaptive_avg_pool2d(grid, kside)
        else:
            out = F.interpolate(grid, size=(kside, kside), mode='bilinear',
                                align_corners=False)
        return out.flatten(2).transpose(1, 2)  # (I, k, C)
    seq = feats.transpose(1, 2)  # (I, C, N)
    if mode == 'pool':
        out = F.adaptive_avg_pool1d(seq, k)
    else:
        out = F.interpolate(seq, size=k, mode='linear', align_corners=False)
    return out.transpose(1, 2)  # (I, k, C)


@OBJECTIVES.register_module()
class VisualRegressionObjective(BaseObjective):
    """Metaquery outputs -> projector -> clean-image encoder features.

    Args:
        weight (float): Loss weight. Defaults to 1.0.
        loss (str): ``'mse'`` (mean over channels), ``'cosine'`` (``1 -
            cos``) or ``'smooth_l1'``. Defaults to ``'cosine'``.
        resample (str): How encoder tokens become K targets: ``'pool'``,
            ``'interpolate'`` or ``'none'`` (K = token count, the literal
            "metaqueries predict the understanding tokens"). Defaults to
            ``'pool'``.
        target_space (str): ``'encoder'``: the understanding encoder's
            features; ``'connector'``: the same after the (frozen)
            connector, i.e. the embeddings the und expert reads. Defaults
            to ``'encoder'``.
        projector_hidden (int, optional): Hidden width of the 2-layer
            projector; None means the model width. Defaults to None.
        normalize_target (bool): LayerNorm the targets (no affine) before
            the loss; useful with ``mse``. Defaults to False.
        see_caption (bool): Metaqueries also attend to the caption segment
            (when there is one). Defaults to False.
        timestep_window (Sequence[float], optional): Apply only to samples
            with ``t`` in ``[lo, hi]``. Defaults to None.
    """
    requires = ('mq_hidden', )
    needs_noisy_latents = True  # metaqueries read the noisy image

    def __init__(self,
                 weight: float = 1.0,
                 loss: str = 'cosine',
                 resample: str = 'pool',
                 target_space: str = 'encoder',
                 projector_hidden: Optional[int] = None,
                 normalize_target: bool = False,
                 see_caption: bool = False,
                 timestep_window: Optional[Sequence[float]] = None):
        super().__init__(weight)
        if loss not in LOSSES:
            raise ValueError(f'unknown regression loss {loss!r}; expected '
                             f'one of {LOSSES}')
        if resample not in RESAMPLE:
            raise ValueError(f'unknown resample {resample!r}; expected one '
                             f'of {RESAMPLE}')
        if target_space not in SPACES:
            raise ValueError(f'unknown target_space {target_space!r}; '
                             f'expected one of {SPACES}')
        self.loss, self.resample = loss, resample
        self.target_space = target_space
        self.projector_hidden = projector_hidden
        self.normalize_target = normalize_target
        self.see_caption = see_caption
        self.timestep_window = check_window(timestep_window)
        self.projector: Optional[nn.Module] = None

    @classmethod
    def plan_options(cls, cfg: dict) -> dict:
        return dict(metaquery=True,
                    queries_see_caption=bool(cfg.get('see_caption', False)))

    def setup(self, model: nn.Module) -> None:
        if self.weight == 0:
            return  # inactive: no projector, no metaqueries needed
        if not model.metaquery.enabled:
            raise UnoConfigError(
                'VisualRegressionObjective needs metaqueries: set '
                'model.metaquery.num_queries > 0 (or remove the objective)')
        if model.und_encoder is None:
            raise UnoConfigError(
                'VisualRegressionObjective regresses understanding-encoder '
                'features: set model.und_encoder')
        d = model.cfg.hidden_size
        hidden = self.projector_hidden or d
        out = d if self.target_space == 'connector' else \
            model.und_encoder.feature_dim
        self.projector = nn.Sequential(
            nn.Linear(d, hidden), nn.SiLU(), nn.Linear(hidden, out))
        self.num_queries = model.metaquery.num_queries

    @torch.no_grad()
    def prepare(self, model, batch: PackedBatch, generator=None,
                noise_seeds=None) -> Optional[torch.Tensor]:
        """The target: ``(I_mq, K, C)`` understanding-encoder features of
        the metaqueries' images, resampled to ``K`` tokens."""
        if batch.mq_images.numel() == 0:
            return None
        feats = model.encode_understanding(batch.images[batch.mq_images])
        if self.target_space == 'connector':  # what the und expert reads
            feats = model.connector(feats.to(
                next(model.connector.parameters()).dtype))  # (I, N, D)
        target = resample_tokens(feats.float(), self.num_queries,
                                 self.resample)  # (I_mq, K, C)
        if self.normalize_target:
            target = F.layer_norm(target, target.shape[-1:])
        return target

    def kept(self, batch: PackedBatch,
             noisy: Optional[NoisyLatents] = None) -> Tensor:
        """``(N_mq,)`` bool: the metaquery tokens the loss applies to."""
        return window_mask(batch, noisy, batch.sample_ids[batch.mq_index],
                           self.timestep_window)

    def count(self, batch: PackedBatch,
              noisy: Optional[NoisyLatents] = None,
              state: Optional[Tensor] = None) -> Tensor:
        """The metaquery tokens in the timestep window."""
        return self.kept(batch, noisy).sum().float()

    def forward(self, outputs: ModelOutputs, batch: PackedBatch,
                noisy: Optional[NoisyLatents] = None,
                state: Optional[torch.Tensor] = None) -> ObjectiveResult:
        keep = self.kept(batch, noisy)  # (N_mq,), summed: count()
        count = keep.sum().float()
        if outputs.mq_hidden is None or batch.mq_index.numel() == 0:
            return ObjectiveResult(outputs.hidden.new_zeros(()), count)
        pred = self.projector(outputs.mq_hidden).float()  # (N_mq, C)
        target = state[batch.mq_group, batch.mq_slot]  # (N_mq, C)
        if self.loss == 'mse':
            per = (pred - target).pow(2).mean(-1)
        elif self.loss == 'smooth_l1':
            per = F.smooth_l1_loss(pred, target, reduction='none').mean(-1)
        else:
            per = 1 - F.cosine_similarity(pred, target, dim=-1)
        item_sample = batch.sample_ids[batch.mq_index]  # (N_mq,)
        per = per * keep  # (N_mq,)
        return ObjectiveResult(
            per.sum(), count,
            per_item=per.detach()[keep],
            item_sample=item_sample[keep])
