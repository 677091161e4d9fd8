"""Align the generation expert's noisy-latent states to ViT features.

A proxy objective in the spirit of REPA (Yu et al., "Representation
Alignment for Generation", arXiv 2410.06940; sihyun-yu/REPA, MIT): the
hidden states of the noisy latent tokens after decoder layer ``layer``
(the generation expert's representation, before the final norm) go
through a small trainable projector and are pulled, token by token, to
the frozen understanding encoder's features of the *clean* image,
resampled to the latent grid (negative cosine). Unlike UNO's objectives it
does not pass through the understanding expert: the target is imposed on
the generation representation directly. Written from the paper's
description; no code was copied.
"""
import torch
import torch.nn.functional as F
from torch import nn

from uno.objectives import BaseObjective, ObjectiveResult, resample_tokens
from uno.registry import OBJECTIVES
from uno.errors import UnoConfigError


@OBJECTIVES.register_module()
class RepaAlignmentObjective(BaseObjective):
    """Negative cosine between projected layer states and ViT features.

    Args:
        weight (float): Loss weight. Defaults to 0.5.
        layer (int): 1-based decoder layer whose output is aligned.
            Defaults to 1.
        projector_hidden (int, optional): Projector width; None means the
            model width. Defaults to None.
    """
    requires = ('layers', )

    def __init__(self, weight: float = 0.5, layer: int = 1,
                 projector_hidden: int = None):
        super().__init__(weight)
        if layer < 1:
            raise ValueError(f'layer is 1-based, got {layer}')
        self.layer = layer
        self.requires_layers = (layer, )
        self.projector_hidden = projector_hidden
        self.projector = None

    def setup(self, model: nn.Module) -> None:
        if self.weight == 0:
            return
        if model.und_encoder is None:
            raise UnoConfigError('RepaAlignmentObjective needs '
                                 'model.und_encoder for its targets')
        if self.layer > model.cfg.num_layers:
            raise UnoConfigError(
                f'RepaAlignmentObjective.layer={self.layer} but the model '
                f'has {model.cfg.num_layers} layers')
        d = model.cfg.hidden_size
        hidden = self.projector_hidden or d
        self.projector = nn.Sequential(
            nn.Linear(d, hidden), nn.SiLU(),
            nn.Linear(hidden, model.und_encoder.feature_dim))

    @torch.no_grad()
    def prepare(self, model, batch, generator=None, noise_seeds=None):
        """The target: ``(I, N_lat, C)`` clean-image encoder features,
        resampled to the latent grid (None without noisy images)."""
        if batch.noisy_images.numel() == 0:
            return None
        per_image = batch.noisy_index.numel() // batch.noisy_images.numel()
        feats = model.encode_understanding(batch.images[batch.noisy_images])
        return resample_tokens(feats.float(), per_image,
                               'interpolate')  # (I, N_lat, C)

    def count(self, batch, noisy=None, state=None) -> torch.Tensor:
        """The noisy latent tokens."""
        return torch.tensor(float(batch.noisy_index.numel()),
                            device=batch.device)

    def forward(self, outputs, batch, noisy=None,
                state=None) -> ObjectiveResult:
        states = outputs.layers[self.layer][batch.noisy_index]  # (N, D)
        pred = self.projector(states).float()  # (N, C)
        # token k of each image: its row-major slot in the latent grid
        side = int(batch.noisy_pos[:, 1].max()) + 1
        slot = batch.noisy_pos[:, 0] * side + batch.noisy_pos[:, 1]  # (N,)
        target = state[batch.noisy_group, slot]  # (N, C)
        per = 1 - F.cosine_similarity(pred, target, dim=-1)  # (N,)
        return ObjectiveResult(
            per.sum(), self.count(batch, noisy, state),
            per_item=per.detach(),
            item_sample=batch.sample_ids[batch.noisy_index])
