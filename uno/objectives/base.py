"""The objective contract.

An objective owns everything of its loss that is not the network: noise,
timesteps, targets and reductions (the DiT pattern). It has two phases:

1. :meth:`BaseObjective.prepare` runs *before* the model, with the model
   available as a callable (e.g. the flow objective samples timesteps and
   noise and writes the noisy latents into ``batch.extras``);
2. :meth:`BaseObjective.forward` runs *after* the model on its
   :class:`~uno.models.ModelOutputs` and returns a loss **sum** and the
   **count** it was summed over, never a mean. :class:`ObjectiveSet`
   normalises by the globally reduced count and applies the weight.
"""
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from uno.models.outputs import ModelOutputs
from uno.structures import PackedBatch


@dataclass
class ObjectiveResult:
    """A loss sum and the number of items (tokens, samples) it sums over.

    Attributes:
        loss_sum (Tensor): Scalar sum of per-item losses.
        count (Tensor): Scalar number of items (float).
        logs (dict): Extra scalars to log as ``<key>/<name>``.
        per_item (Tensor, optional): ``(N,)`` the items' losses, for
            per-sample evaluation.
        item_sample (Tensor, optional): ``(N,)`` the sample of each item.
    """
    loss_sum: Tensor
    count: Tensor
    logs: Dict[str, Tensor] = field(default_factory=dict)
    per_item: Optional[Tensor] = None
    item_sample: Optional[Tensor] = None


class BaseObjective(nn.Module):
    """Base class of every objective.

    Args:
        weight (float): Weight in the total loss; 0 skips the loss
            computation (``prepare`` still runs). Defaults to 1.0.
    """

    #: ModelOutputs fields the objective reads
    requires: Tuple[str, ...] = ()
    #: layers (1-based) whose hidden states the objective needs
    requires_layers: Tuple[int, ...] = ()

    def __init__(self, weight: float = 1.0):
        super().__init__()
        if weight < 0:
            raise ValueError(f'objective weight must be >= 0, got {weight}')
        self.weight = float(weight)

    def setup(self, model: nn.Module) -> None:
        """Check the model supports the objective (called once at build).
        """

    def prepare(self,
                model: nn.Module,
                batch: PackedBatch,
                generator: Optional[torch.Generator] = None) -> None:
        """Write what the model needs into ``batch.extras`` (optional)."""

    def forward(self, outputs: ModelOutputs,
                batch: PackedBatch) -> ObjectiveResult:
        raise NotImplementedError
