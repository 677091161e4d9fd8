"""Log how much each objective's gradient reaches the generation expert
(docs/engine.md#hooks: why the measurement leaves training unchanged)."""
import contextlib
from typing import Dict, Sequence, Union

import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from torch import nn

from uno.evaluation.gradient_flow import gradient_flow
from uno.registry import HOOKS
from uno.utils.dist import rank
from uno.utils.seeding import derived_generator
from ..fsdp import UnoFSDP


@contextlib.contextmanager
def _preserved_state(module: nn.Module, device: torch.device):
    """Fork the global RNGs; restore ``module``'s buffers on exit."""
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
    generation expert (:func:`gradient_flow`), logged every ``interval``
    iterations at the step of the iteration's losses; rank 0 only, skipped
    under FSDP. Off unless ``custom_hooks`` adds it.

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
        if isinstance(trainer, UnoFSDP):
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
        """:func:`gradient_flow` of one raw batch; RNG state, buffers and
        ``.grad`` are left as they were."""
        batch = trainer.data_preprocessor(data_batch, True)['batch']
        gen = derived_generator(self.seed, int(iteration),
                                device=batch.device)
        context = (optim_wrapper.optim_context(trainer)
                   if optim_wrapper is not None
                   and hasattr(optim_wrapper, 'optim_context')
                   else contextlib.nullcontext())
        with _preserved_state(trainer, batch.device), context:
            return gradient_flow(trainer, batch, self.layers, gen)
