"""What the unified model returns: named hidden states, never losses."""
from dataclasses import dataclass, field
from typing import Dict, Optional

from torch import Tensor


@dataclass
class ModelOutputs:
    """Outputs of :class:`~uno.models.UnoModel` for one packed batch.

    Attributes:
        hidden (Tensor): Final per-expert-normed hidden states ``(L, D)``.
        velocity (Tensor): Predicted velocity of every noisy latent token
            ``(N_noisy, C)`` (gen expert, ``llm2vae`` head).
        ce_logits (Tensor): Next-token logits at the CE positions
            ``(N_ce, V)`` (und expert, ``lm_head``).
        mq_hidden (Tensor): Hidden states of the supervised metaquery
            tokens ``(N_mq, D)``.
        layers (dict[int, Tensor]): Requested intermediate layer outputs
            ``(L, D)`` keyed by 1-based layer number.
        vit_features (Tensor): Understanding-encoder features of the ViT
            tokens, before the connector ``(N_vit, C_vit)``, in the order
            of ``batch.vit_index``.
    """
    hidden: Tensor
    velocity: Optional[Tensor] = None
    ce_logits: Optional[Tensor] = None
    mq_hidden: Optional[Tensor] = None
    layers: Dict[int, Tensor] = field(default_factory=dict)
    vit_features: Optional[Tensor] = None
