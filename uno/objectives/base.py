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
    #: run ``prepare`` even at weight 0 (it provides inputs others need)
    always_prepare: bool = False
    #: reads the noisy latents (and timesteps) that an ``always_prepare``
    #: objective writes; :class:`ObjectiveSet` refuses a set where no
    #: objective provides them
    needs_noisy_latents: bool = False

    def __init__(self, weight: float = 1.0):
        super().__init__()
        if weight < 0:
            raise ValueError(f'objective weight must be >= 0, got {weight}')
        self.weight = float(weight)

    @classmethod
    def plan_options(cls, cfg: dict) -> Dict[str, object]:
        """Segments this objective needs in the training plans.

        ``build_runner`` merges the options of every objective with a
        non-zero weight and hands them to the datasets (``uno=...``), so a
        config lists an objective once and the data follows. Keys:
        ``caption`` (bool), ``metaquery`` (bool), ``queries_see_caption``
        (bool).
        """
        return {}

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


def sample_timestep_of_items(batch: PackedBatch,
                             item_sample: Tensor) -> Tensor:
    """The noisy-image timestep of each item's sample; NaN if it has none.

    Args:
        batch (PackedBatch): With ``extras['timesteps']`` ``(I_noisy,)``.
        item_sample (Tensor): ``(N,)`` sample index of each item.

    Returns:
        Tensor: ``(N,)`` float timesteps.
    """
    per_sample = torch.full((batch.num_samples, ), float('nan'),
                            device=item_sample.device)
    t = batch.extras.get('timesteps')
    if t is not None and batch.noisy_images.numel():
        # every noisy token writes its image's t to its sample
        per_sample[batch.sample_ids[batch.noisy_index]] = \
            t.float()[batch.noisy_group]
    return per_sample[item_sample]


def window_mask(batch: PackedBatch, item_sample: Tensor,
                window: Optional[Tuple[float, float]]) -> Tensor:
    """Items whose sample's timestep lies in ``[lo, hi]``.

    Items of samples without a noisy image (e.g. plain captioning) are
    always kept; ``window=None`` keeps everything.
    """
    keep = torch.ones_like(item_sample, dtype=torch.bool)
    if window is None:
        return keep
    t = sample_timestep_of_items(batch, item_sample)
    lo, hi = window
    return keep & (t.isnan() | ((t >= lo) & (t <= hi)))


def check_window(window) -> Optional[Tuple[float, float]]:
    """Validate a ``timestep_window`` argument."""
    if window is None:
        return None
    lo, hi = (float(v) for v in window)
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f'timestep_window must satisfy 0 <= lo <= hi <= 1, '
                         f'got {window}')
    return lo, hi
