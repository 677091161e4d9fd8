"""Log how much each objective's gradient reaches the generation expert.

UNO's understanding losses (captioning, metaquery regression) reach the
generation expert only through shared attention: the frozen und expert
reads the gen expert's keys and values of the noisy latents. This hook
measures that path during training. Every ``interval`` iterations it runs
one extra forward on the iteration's batch (the first micro-batch under
gradient accumulation) and, for each active objective
separately, takes ``torch.autograd.grad`` of its weighted, normalised loss
with respect to the gen expert's trainable parameters of every decoder
layer. It logs, per 1-based layer ``i``:

* ``gradflow/<objective>/norm/layer<i>``: the L2 norm of that gradient
  over the layer's gen parameters (weight included: the size of that
  objective's pull on the layer in the update the optimizer sees);
* ``gradflow/cos_flow_<objective>/layer<i>``: for every objective that is
  not the flow objective, the cosine between the flow gradient and that
  objective's gradient, flattened over the layer's gen parameters.

The values go to every vis backend (``scalars.json`` of
``LocalVisBackend`` and MLflow) at step ``runner.iter + 1``, the step of
the iteration's losses. ``tools/analysis/plot_gradient_flow.py`` plots
them.

The extra forward does not change training: it runs after the optimizer
step, gradients come from :func:`torch.autograd.grad` (nothing is
accumulated into ``.grad``), noise and timesteps come from a dedicated
generator seeded by ``(seed, iteration)``, the global RNG state is forked
and restored, and module buffers are restored afterwards. A run with the
hook ends with bit-identical weights to a run without it.

Distributed runs: under DDP the hook runs on rank 0 only, on the
unwrapped module and rank 0's local batch (the other ranks go on; the
module forward has no collectives, and the objectives are normalised by
the local count instead of ObjectiveSet's all-reduced one). Under FSDP it
is skipped with a warning: the forward of a sharded module all-gathers
its weights, which one rank cannot do alone.
"""
import contextlib
from typing import Dict, List, Optional, Sequence, Union

import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from torch import Tensor, nn

from uno.registry import HOOKS
from uno.structures import PackedBatch
from uno.utils.dist import rank
from uno.utils.seeding import derived_generator

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


@contextlib.contextmanager
def _preserved_state(module: nn.Module, device: torch.device):
    """Fork the global RNGs and restore ``module``'s buffers on exit."""
    buffers = {n: b.detach().clone() for n, b in module.named_buffers()}
    devices = [device] if device.type == 'cuda' else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        with torch.no_grad():
            for name, buf in module.named_buffers():
                if name in buffers:
                    buf.copy_(buffers[name])


@HOOKS.register_module()
class GradientFlowHook(Hook):
    """Per-layer gradient norms and flow cosines of each objective on the
    generation expert, logged every ``interval`` iterations.

    Off unless a config adds it::

        custom_hooks = [dict(type='BenchmarkGridHook'),
                        dict(type='GradientFlowHook', interval=50)]

    Args:
        interval (int): Iterations between measurements. Defaults to 50.
        layers (str | Sequence[int]): ``'all'`` or 1-based decoder layers.
            Defaults to ``'all'``.
        seed (int): Seed of the measurement's noise (combined with the
            iteration). Defaults to 0.
    """
    priority = 'LOW'

    def __init__(self, interval: int = 50,
                 layers: Union[str, Sequence[int]] = 'all', seed: int = 0):
        if interval < 1:
            raise ValueError(f'interval must be >= 1, got {interval}')
        if layers != 'all' and (isinstance(layers, str) or not all(
                isinstance(i, int) for i in layers)):
            raise ValueError("layers must be 'all' or a list of 1-based "
                             f'layer numbers, got {layers!r}')
        self.interval, self.layers, self.seed = interval, layers, seed
        self._warned = False

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        if not self.every_n_train_iters(runner, self.interval):
            return
        if data_batch is None or rank() != 0:
            return
        trainer = runner.model
        if type(trainer).__name__ == 'UnoFSDP':
            if not self._warned:
                print_log('GradientFlowHook: skipped under FSDP (a sharded '
                          'forward needs every rank)', logger='current',
                          level=30)
                self._warned = True
            return
        if is_model_wrapper(trainer):
            trainer = trainer.module
        if isinstance(data_batch, list):  # an accumulated step: the first
            data_batch = data_batch[0]
        logs = self.measure(trainer, data_batch, runner.iter,
                            runner.optim_wrapper)
        if logs:
            runner.visualizer.add_scalars(logs, step=runner.iter + 1)

    def measure(self, trainer: nn.Module, data_batch, iteration: int,
                optim_wrapper=None) -> Dict[str, float]:
        """The logs of :func:`gradient_flow` on one raw dataloader batch,
        leaving RNG state, buffers and ``.grad`` as they were."""
        batch = trainer.data_preprocessor(data_batch, True)['batch']
        gen = derived_generator(self.seed, int(iteration),
                                device=batch.device)
        context = (optim_wrapper.optim_context(trainer)
                   if optim_wrapper is not None
                   and hasattr(optim_wrapper, 'optim_context')
                   else contextlib.nullcontext())
        with _preserved_state(trainer, batch.device), context:
            return gradient_flow(trainer, batch, self.layers, gen)
