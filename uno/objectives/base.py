"""The objective contract.

An objective owns everything of its loss that is not the network: noise,
timesteps, targets and reductions (the DiT pattern). It has two phases:

1. :meth:`BaseObjective.prepare` runs *before* the model, with the model
   available as a callable, and returns what the objective keeps for its
   loss (its *state*, e.g. the regression target); the flow objective
   returns the batch's :class:`~uno.structures.NoisyLatents`, which the
   training step passes to the model;
2. :meth:`BaseObjective.forward` runs *after* the model on its
   :class:`~uno.models.ModelOutputs`, with the noisy latents and its own
   state, and returns a loss **sum** and the **count** it was summed over,
   never a mean. :class:`ObjectiveSet` normalises by the globally reduced
   count and applies the weight.

The count is also known *without* the model: :meth:`BaseObjective.count`
gives it from the batch, the noisy latents and the state, and ``forward``
reports exactly that value. Gradient accumulation sums it over the
micro-batches of a step before the first backward, so N micro-batches
train as their union.
"""
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from uno.models.outputs import ModelOutputs
from uno.structures import NoisyLatents, PackedBatch


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
    #: objective returns; :class:`ObjectiveSet` refuses a set where no
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
                generator: Optional[torch.Generator] = None,
                noise_seeds: Optional[List[int]] = None) -> Any:
        """Draw or compute what the loss needs before the model runs.

        Args:
            model (nn.Module): The unwrapped model.
            batch (PackedBatch): The packed batch.
            generator (torch.Generator, optional): Randomness of the step.
            noise_seeds (list[int], optional): One seed per noisy image,
                for noise that does not depend on the batch layout.

        Returns:
            The objective's state, handed back to :meth:`forward` (None by
            default); flow matching returns the :class:`NoisyLatents`.
        """
        return None

    def count(self, batch: PackedBatch,
              noisy: Optional[NoisyLatents] = None,
              state: Any = None) -> Tensor:
        """The number of items :meth:`forward` sums over, without the model.

        ``forward`` must return this value as its count (the objectives
        here derive both from one helper, e.g. the timestep-window mask;
        ``tests/test_objectives`` checks they agree). Gradient accumulation
        sums it over the micro-batches of a step before their forwards.

        Args:
            batch (PackedBatch): The packed batch.
            noisy (NoisyLatents, optional): Its noisy latents.
            state: What this objective's :meth:`prepare` returned.

        Returns:
            Tensor: Scalar float count on ``batch.device``.
        """
        raise NotImplementedError(
            f'{type(self).__name__} does not implement count(batch, noisy, '
            'state); gradient accumulation (optim_wrapper.'
            'accumulative_counts > 1) needs it')

    def forward(self, outputs: ModelOutputs, batch: PackedBatch,
                noisy: Optional[NoisyLatents] = None,
                state: Any = None) -> ObjectiveResult:
        """The loss sum and count on the model's outputs.

        Args:
            outputs (ModelOutputs): The model's outputs on ``batch``.
            batch (PackedBatch): The packed batch.
            noisy (NoisyLatents, optional): The noisy latents the model
                read (None when the batch has no noisy image).
            state: What this objective's :meth:`prepare` returned.
        """
        raise NotImplementedError


def sample_timestep_of_items(batch: PackedBatch,
                             noisy: Optional[NoisyLatents],
                             item_sample: Tensor) -> Tensor:
    """The noisy-image timestep of each item's sample; NaN if it has none.

    Args:
        batch (PackedBatch): The packed batch.
        noisy (NoisyLatents, optional): Its noisy latents.
        item_sample (Tensor): ``(N,)`` sample index of each item.

    Returns:
        Tensor: ``(N,)`` float timesteps.
    """
    per_sample = torch.full((batch.num_samples, ), float('nan'),
                            device=item_sample.device)
    if noisy is not None and batch.noisy_images.numel():
        # every noisy token writes its image's t to its sample
        per_sample[batch.sample_ids[batch.noisy_index]] = \
            noisy.token_timesteps(batch.noisy_group).float()
    return per_sample[item_sample]


def window_mask(batch: PackedBatch, noisy: Optional[NoisyLatents],
                item_sample: Tensor,
                window: Optional[Tuple[float, float]]) -> Tensor:
    """Items whose sample's timestep lies in ``[lo, hi]``.

    Items of samples without a noisy image (e.g. plain captioning) are
    always kept; ``window=None`` keeps everything.
    """
    keep = torch.ones_like(item_sample, dtype=torch.bool)
    if window is None:
        return keep
    t = sample_timestep_of_items(batch, noisy, item_sample)
    lo, hi = window
    return keep & (t.isnan() | ((t >= lo) & (t <= hi)))


def check_window(window) -> Optional[Tuple[float, float]]:
    """Validate a ``timestep_window`` argument."""
    if window is None:
        return None
    try:
        lo, hi = (float(v) for v in window)
    except (TypeError, ValueError) as e:  # not two numbers
        raise ValueError(f'timestep_window must be two numbers (lo, hi), '
                         f'got {window!r}') from e
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f'timestep_window must satisfy 0 <= lo <= hi <= 1, '
                         f'got {window}')
    return lo, hi
