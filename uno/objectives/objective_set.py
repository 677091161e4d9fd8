"""ObjectiveSet: the explicit weighted sum of the configured objectives.

Built from a config dict keyed by name (``objectives = dict(flow=...,
caption=...)``), so an ablation overrides one weight with a short delta.
For each objective the set divides the local loss sum by the count summed
over all ranks (times the world size, since DDP averages gradients), so N
processes with batch B train exactly like one process with batch N*B.

Logged per objective: ``loss/<name>`` (the global mean), ``weight/<name>``
and ``tokens/<name>`` (the global count); and ``loss``, the weighted total.

Gradient accumulation: :meth:`ObjectiveSet.step_counts` sums each
objective's count (:meth:`BaseObjective.count`, no model needed) over the
micro-batches of a step and over ranks; passed as ``counts=`` to every
micro-batch, the summed totals (and gradients) are those of the union,
and :meth:`ObjectiveSet.merge_logs` gives the union's logs.

A step is ``prepared = set.prepare(model, batch)`` (the noisy latents and
each objective's state, e.g. the regression target), ``outputs =
model(batch, prepared.noisy)``, ``loss, logs = set(outputs, batch,
prepared)``. Objectives that read the noisy latents (UNO captioning,
regression) need one that provides them (flow matching,
``always_prepare``); the set refuses to build without it. Noisy images
that no active objective reads (plain captioning validated on
text-to-image data) get flow matching's default noise so the model can
embed them; a batch with no noisy image at all gives the flow objective a
zero loss over zero tokens.
"""
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from uno.models.outputs import ModelOutputs
from uno.registry import OBJECTIVES
from uno.structures import NoisyLatents, PackedBatch
from uno.utils.dist import all_reduce_sum, world_size
from uno.errors import UnoConfigError


_NEEDS_FLOW = ('objectives need noisy latents; add a flow objective '
               '(weight 0 allowed)')


def _default_noise():
    from .flow_matching import FlowMatchingObjective
    return FlowMatchingObjective(weight=0.0)


@dataclass
class Prepared:
    """What :meth:`ObjectiveSet.prepare` drew for one batch.

    Attributes:
        noisy (NoisyLatents, optional): The noisy latents the model reads
            (None when the batch has no noisy image).
        states (dict): ``objective name -> state`` its ``prepare``
            returned (e.g. the regression target), handed back to it.
    """
    noisy: Optional[NoisyLatents] = None
    states: Dict[str, Any] = field(default_factory=dict)


class ObjectiveSet(nn.Module):
    """Weighted objectives keyed by name.

    Args:
        objectives (dict[str, dict]): ``name -> OBJECTIVES config`` (each
            with a ``weight``). Names become log keys (``loss/<name>``).
    """

    def __init__(self, objectives: Dict[str, dict]):
        super().__init__()
        if not objectives:
            raise UnoConfigError('the config has no objectives: set '
                                 "objectives = dict(flow=dict(type="
                                 "'FlowMatchingObjective'))")
        built = {}
        for name, cfg in objectives.items():
            if not isinstance(cfg, dict) or 'type' not in cfg:
                raise UnoConfigError(f'objectives.{name} must be a dict '
                                     "with a 'type'")
            if '/' in name or '.' in name:
                raise UnoConfigError(f"objective name '{name}' may not "
                                     "contain '/' or '.'")
            built[name] = OBJECTIVES.build(cfg)
        self.objectives = nn.ModuleDict(built)
        self._check_noisy_latents()

    def _check_noisy_latents(self) -> None:
        """Raise if an active objective reads noisy latents that no
        objective prepares."""
        if any(obj.always_prepare for obj in self.objectives.values()):
            return
        readers = [
            f'objectives.{name} ({type(obj).__name__})'
            for name, obj in self.objectives.items()
            if obj.weight > 0 and getattr(obj, 'needs_noisy_latents', False)
        ]
        if readers:
            raise UnoConfigError(
                f'{_NEEDS_FLOW}: {", ".join(readers)} read the noisy '
                'latents but no objective prepares them; e.g. '
                "objectives.flow=dict(type='FlowMatchingObjective', "
                'weight=0.0)')

    def setup(self, model: nn.Module) -> None:
        """Let every objective check the model (once, at build)."""
        for obj in self.objectives.values():
            obj.setup(model)

    @staticmethod
    def plan_options(objectives: Dict[str, dict]) -> Dict[str, object]:
        """Merged plan options of the configured objectives with a
        non-zero weight (see :meth:`BaseObjective.plan_options`)."""
        options: Dict[str, object] = {}
        for cfg in objectives.values():
            cls = OBJECTIVES.get(cfg['type']) if isinstance(
                cfg.get('type'), str) else cfg.get('type')
            if cls is None or float(cfg.get('weight', 1.0)) == 0:
                continue
            for key, value in cls.plan_options(cfg).items():
                options[key] = options.get(key, False) or value
        return options

    @property
    def requires_layers(self) -> Tuple[int, ...]:
        layers = set()
        for obj in self.objectives.values():
            if obj.weight > 0:
                layers.update(obj.requires_layers)
        return tuple(sorted(layers))

    def prepare(self,
                model: nn.Module,
                batch: PackedBatch,
                generator: Optional[torch.Generator] = None,
                noise_seeds: Optional[List[int]] = None) -> Prepared:
        """Run ``prepare`` of the active objectives (and of those that
        provide inputs to others, e.g. flow's noisy latents).

        Args:
            model (nn.Module): The unwrapped model.
            batch (PackedBatch): The packed batch.
            generator (torch.Generator, optional): Randomness of the step.
            noise_seeds (list[int], optional): One seed per noisy image
                (see :class:`FlowMatchingObjective`).

        Returns:
            Prepared: The noisy latents and the objectives' states.
        """
        prepared = Prepared()
        for name, obj in self.objectives.items():
            if not (obj.weight > 0 or obj.always_prepare):
                continue
            state = obj.prepare(model, batch, generator, noise_seeds)
            if isinstance(state, NoisyLatents):
                prepared.noisy = prepared.noisy or state
            prepared.states[name] = state
        if batch.noisy_index.numel() and prepared.noisy is None:
            # noisy images that no active objective reads (e.g. captioning
            # only, validated on text-to-image data): the model still
            # embeds them, with flow matching's default noise
            prepared.noisy = _default_noise().prepare(
                model, batch, generator, noise_seeds)
        return prepared

    def result(self, name: str, outputs: ModelOutputs, batch: PackedBatch,
               prepared: Prepared):
        """Objective ``name``'s (unweighted) :class:`ObjectiveResult`, with
        the noisy latents and the state its ``prepare`` returned."""
        return self.objectives[name](outputs, batch, prepared.noisy,
                                     prepared.states.get(name))

    def forward(
        self,
        outputs: ModelOutputs,
        batch: PackedBatch,
        prepared: Prepared,
        counts: Optional[Dict[str, Tensor]] = None
    ) -> Tuple[Tensor, Dict[str, Tensor]]:
        """Total loss and log variables.

        Args:
            outputs (ModelOutputs): The model's outputs on ``batch``.
            batch (PackedBatch): The packed batch.
            prepared (Prepared): What :meth:`prepare` drew for it.
            counts (dict[str, Tensor], optional): Normalisers per
                objective, e.g. the counts of all micro-batches of an
                accumulated step; None means this batch's counts summed
                over ranks. Defaults to None.

        Returns:
            tuple[Tensor, dict[str, Tensor]]: The weighted total (the
            scalar to back-propagate on this rank) and detached logs.
        """
        total: Optional[Tensor] = None
        logs: Dict[str, Tensor] = {}
        n_ranks = world_size()
        for name, obj in self.objectives.items():
            logs[f'weight/{name}'] = torch.tensor(obj.weight)
            if obj.weight == 0:
                continue
            res = self.result(name, outputs, batch, prepared)
            if counts is not None and name in counts:
                count = torch.as_tensor(counts[name], dtype=torch.float32)
            else:
                count = all_reduce_sum(res.count.float())
            loss = res.loss_sum * n_ranks / count.clamp(min=1)
            # the logged value is the global mean over all ranks' items
            logs[f'loss/{name}'] = all_reduce_sum(loss) / n_ranks
            logs[f'tokens/{name}'] = count
            for key, value in res.logs.items():
                logs[f'{key}/{name}'] = value.detach()
            term = obj.weight * loss
            total = term if total is None else total + term
        if total is None:
            raise UnoConfigError('every objective has weight 0: nothing to '
                                 'train')
        logs['loss'] = all_reduce_sum(total) / n_ranks
        return total, logs

    @torch.no_grad()
    def step_counts(self, batches: List[PackedBatch],
                    prepared: List[Prepared]) -> Dict[str, Tensor]:
        """Normalisers of one step over several micro-batches.

        Args:
            batches (list[PackedBatch]): This rank's micro-batches.
            prepared (list[Prepared]): What :meth:`prepare` drew for each.

        Returns:
            dict[str, Tensor]: ``name -> count`` of every active objective,
            summed over the micro-batches and all ranks; pass it as
            ``counts=`` to :meth:`forward` of each micro-batch.
        """
        names = [n for n, obj in self.objectives.items() if obj.weight > 0]
        local = torch.stack([
            torch.stack([
                self.objectives[n].count(b, p.noisy, p.states.get(n)).float()
                for n in names]).to(b.device)
            for b, p in zip(batches, prepared)]).sum(0)  # (O,)
        return dict(zip(names, all_reduce_sum(local)))

    def merge_logs(self, logs: List[Dict[str, Tensor]]) -> Dict[str, Tensor]:
        """The logs of a step from those of its micro-batches.

        ``loss`` and ``loss/<name>`` are summed (each micro-batch's is its
        share of the step's mean when :meth:`forward` had the step's
        ``counts``); ``tokens/<name>`` and ``weight/<name>`` are the same
        in every micro-batch; other logs (e.g. accuracies) are averaged
        over the micro-batches that have them.
        """
        losses = {'loss'} | {f'loss/{n}' for n in self.objectives}
        merged = {}
        for key in dict.fromkeys(k for d in logs for k in d):
            values = torch.stack([torch.as_tensor(d[key]).float()
                                  for d in logs if key in d])  # (M,)
            if key in losses:
                merged[key] = values.sum()
            elif key.startswith(('tokens/', 'weight/')):
                merged[key] = values[-1]
            else:
                merged[key] = values.mean()
        return merged

    @torch.no_grad()
    def per_sample(self, outputs: ModelOutputs, batch: PackedBatch,
                   prepared: Prepared) -> Dict[str, Tensor]:
        """Mean loss of each sample, per prepared objective.

        Returns:
            dict[str, Tensor]: ``name -> (B,)``; NaN where a sample has no
            item of that objective.
        """
        result = {}
        for name, obj in self.objectives.items():
            if not (obj.weight > 0 or obj.always_prepare):
                continue
            res = self.result(name, outputs, batch, prepared)
            if res.per_item is None:
                continue
            sums = res.per_item.new_zeros(batch.num_samples)
            counts = res.per_item.new_zeros(batch.num_samples)
            sums.index_add_(0, res.item_sample, res.per_item.float())
            counts.index_add_(0, res.item_sample,
                              torch.ones_like(res.per_item, dtype=sums.dtype))
            result[name] = sums / counts  # NaN where counts == 0
        return result
