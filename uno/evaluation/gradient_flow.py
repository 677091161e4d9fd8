"""How much each objective's gradient reaches the generation expert.

UNO's understanding losses (captioning, metaquery regression) reach the
generation expert only through shared attention: the frozen und expert
reads the gen expert's keys and values of the noisy latents.
:func:`gradient_flow` measures that path on one batch: for each active
objective separately, ``torch.autograd.grad`` of its weighted, normalised
loss with respect to the gen expert's trainable parameters of every
decoder layer (nothing is accumulated into ``.grad``). Per 1-based layer
``i`` it returns:

* ``gradflow/<objective>/norm/layer<i>``: the L2 norm of that gradient
  over the layer's gen parameters (weight included: the size of that
  objective's pull on the layer in the update the optimizer sees);
* ``gradflow/cos_flow_<objective>/layer<i>``: for every objective that is
  not the flow objective, the cosine between the flow gradient and that
  objective's gradient, flattened over the layer's gen parameters.

:class:`~uno.engine.hooks.GradientFlowHook` logs it during training;
``tools/analysis/plot_gradient_flow.py`` plots it.
"""
from typing import Dict, List, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from uno.structures import PackedBatch

PREFIX = 'gradflow'


def gen_layer_params(model: nn.Module,
                     layers: Union[str, Sequence[int]] = 'all'
                     ) -> Dict[int, List[nn.Parameter]]:
    """Trainable gen-expert parameters of each decoder layer.

    Args:
        model (nn.Module): A :class:`~uno.models.UnoModel`.
        layers (str | Sequence[int]): ``'all'`` or 1-based layer numbers.

    Returns:
        dict[int, list[Parameter]]: ``layer -> parameters``; layers whose
        gen expert is frozen are left out.
    """
    stack = model.decoder.layers
    wanted = range(1, len(stack) + 1) if layers == 'all' else layers
    out = {}
    for i in wanted:
        if not 1 <= int(i) <= len(stack):
            raise ValueError(f'layer {i} is not in 1..{len(stack)}')
        params = [p for p in stack[int(i) - 1].experts['gen'].parameters()
                  if p.requires_grad]
        if params:
            out[int(i)] = params
    return out


def flow_objective_name(objectives: nn.ModuleDict) -> Optional[str]:
    """Name of the (first) flow-matching objective of a set, if any."""
    from uno.objectives.flow_matching import FlowMatchingObjective
    for name, obj in objectives.items():
        if isinstance(obj, FlowMatchingObjective):
            return name
    return None


def gradient_flow(trainer: nn.Module,
                  batch: PackedBatch,
                  layers: Union[str, Sequence[int]] = 'all',
                  generator: Optional[torch.Generator] = None
                  ) -> Dict[str, float]:
    """Per-layer gradient norms and flow cosines of every objective.

    ``batch`` gets fresh noise from ``generator``; the gradient of each
    objective is that of ``weight * loss_sum / max(count, 1)`` with the
    local count.

    Args:
        trainer (nn.Module): A :class:`~uno.engine.UnoTrainer` (``model``
            and ``objectives``), not wrapped.
        batch (PackedBatch): A batch on the model's device.
        layers (str | Sequence[int]): ``'all'`` or 1-based layers.
        generator (torch.Generator, optional): Noise and timesteps.

    Returns:
        dict[str, float]: ``gradflow/<name>/norm/layer<i>`` for every
        active objective and ``gradflow/cos_flow_<name>/layer<i>`` for
        every active non-flow objective (left out where either gradient
        is zero, e.g. no caption in the batch).
    """
    model, objset = trainer.model, trainer.objectives
    per_layer = gen_layer_params(model, layers)
    if not per_layer:
        return {}
    params = [p for ps in per_layer.values() for p in ps]
    flow = flow_objective_name(objset.objectives)
    # the flow gradient is the cosines' reference even at weight 0
    names = [n for n, o in objset.objectives.items()
             if o.weight > 0 or n == flow]
    prepared = objset.prepare(model, batch, generator)
    outputs = model(batch, prepared.noisy,
                    return_layers=objset.requires_layers)
    losses = {}
    for name in names:
        res = objset.result(name, outputs, batch, prepared)
        losses[name] = res.loss_sum.float() / res.count.float().clamp(min=1)
    grads: Dict[str, Dict[int, Tensor]] = {}
    for k, name in enumerate(names):
        loss = losses[name]
        if not loss.requires_grad:  # nothing of it in this batch
            continue
        flat = torch.autograd.grad(loss, params, retain_graph=k < len(
            names) - 1, allow_unused=True)
        it = iter(flat)
        grads[name] = {}
        for i, ps in per_layer.items():
            parts = [torch.zeros(p.numel(), device=p.device) if g is None
                     else g.detach().float().flatten()
                     for p, g in zip(ps, (next(it) for _ in ps))]
            grads[name][i] = torch.cat(parts)  # (P_i,) unweighted
    logs = {}
    for name, per in grads.items():
        weight = objset.objectives[name].weight
        if weight == 0:  # the flow reference only
            continue
        for i, g in per.items():
            logs[f'{PREFIX}/{name}/norm/layer{i}'] = float(weight * g.norm())
    ref = grads.get(flow)
    for name, per in grads.items():
        if ref is None or name == flow or objset.objectives[name].weight == 0:
            continue
        for i, g in per.items():
            denom = float(g.norm() * ref[i].norm())
            if denom > 0:
                cos = float(torch.dot(g, ref[i])) / denom
                logs[f'{PREFIX}/cos_flow_{name}/layer{i}'] = \
                    max(-1.0, min(1.0, cos))
    return logs
