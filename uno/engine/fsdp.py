"""FSDP2 (``torch.distributed.fsdp.fully_shard``) for BAGEL-size models.

Each decoder layer holds both experts, the frozen understanding expert
and the trainable generation expert, so one FSDP unit mixes frozen and
trainable parameters: FSDP2 (per-parameter DTensor sharding) allows that,
FSDP1 flat parameters do not. :class:`UnoFSDP` shards the units the model
names (:meth:`UnoModel.fsdp_wrap_modules`: decoder layers, encoder
blocks, connector, untied ``lm_head``) and then the trainer as the root
unit (embeddings, latent I/O, norms, objective heads). Select it with a
config delta (``configs/_base_/strategies/fsdp.py``)::

    model_wrapper_cfg = dict(type='uno.UnoFSDP', param_dtype='bfloat16')

(the ``uno.`` scope lets the config check find uno's wrapper) and launch
with ``tools/dist_train.sh``; without a launcher the config runs
unwrapped. Every rank must build the same weights (same seed, same
checkpoints): this is checked before sharding, since FSDP, unlike DDP,
does not broadcast rank 0's. mmengine's ``EMAHook`` is not supported
under FSDP (it swaps whole state dicts). The Runner builds the optimizer
after wrapping, so it holds the sharded (DTensor) parameters, trainable
ones only (``TrainableOnlyOptimWrapperConstructor``); gradient clipping
works on them unchanged. Checkpoints are sharded
(:mod:`uno.engine.sharded_checkpoint`); ``UnoRunner`` writes and reads
them. The module stays where it was built (CPU) until ``fully_shard``
moves each rank's shard to its device, so no rank holds the whole model
on the accelerator.

Validation and test steps gather every unit once (``eval_unshard``) and
keep it gathered until training resumes: ranks may then run different
numbers of forwards (early-stopping captioning) without a collective
hanging, at the cost of one full copy of the weights per rank.
"""
import contextlib
from typing import List, Optional, Union

import torch
from torch import nn

from uno.registry import MODEL_WRAPPERS

_DTYPES = dict(bf16=torch.bfloat16, bfloat16=torch.bfloat16,
               fp16=torch.float16, float16=torch.float16,
               fp32=torch.float32, float32=torch.float32)


def _dtype(name: Optional[Union[str, torch.dtype]]) -> Optional[torch.dtype]:
    if name is None or isinstance(name, torch.dtype):
        return name
    from uno.utils.config_check import check_keys
    check_keys([name], _DTYPES, 'dtype', ' in model_wrapper_cfg')
    return _DTYPES[name]


def _device_type() -> str:
    from mmengine.device import get_device
    device = get_device()
    return 'cuda' if device == 'cuda' else 'cpu'


def build_mesh(shard_size: Optional[int] = None):
    """A 1-D mesh over all ranks, or 2-D ``(replicate, shard)`` for HSDP.

    Args:
        shard_size (int, optional): Ranks one copy of the model is sharded
            over (e.g. the GPUs of one node); copies are replicated
            across the ``world_size // shard_size`` groups. None shards
            over all ranks. Defaults to None.
    """
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    world = dist.get_world_size()
    if not shard_size or shard_size == world:
        return init_device_mesh(_device_type(), (world, ))
    if world % shard_size:
        from uno.errors import UnoConfigError
        raise UnoConfigError(f'model_wrapper_cfg.shard_size={shard_size} '
                             f'does not divide the world size {world}')
    return init_device_mesh(_device_type(), (world // shard_size, shard_size),
                            mesh_dim_names=('replicate', 'shard'))


def _check_same_weights(module: nn.Module) -> None:
    """Every rank must shard the same weights (DDP would broadcast rank
    0's; a fingerprint per rank is compared instead)."""
    import torch.distributed as dist
    from uno.errors import UnoConfigError
    with torch.no_grad():
        parts = [t.detach().sum(dtype=torch.float64)
                 for t in module.state_dict().values()
                 if t.is_floating_point()]
        local = torch.stack(parts).sum() if parts else torch.zeros(())
    local = local.to(_comm_device())
    prints = [torch.zeros_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(prints, local)
    prints = torch.stack([p.cpu() for p in prints])
    if not torch.allclose(prints, prints[0].expand_as(prints), rtol=1e-9,
                          atol=0):
        raise UnoConfigError(
            'the ranks built different weights before FSDP sharding; use '
            'the same seed on every rank (randomness.diff_rank_seed=False)'
            ' and the same checkpoints')


def _comm_device() -> torch.device:
    if _device_type() == 'cuda':
        return torch.device('cuda', torch.cuda.current_device())
    return torch.device('cpu')


@MODEL_WRAPPERS.register_module()
class UnoFSDP(nn.Module):
    """FSDP2 over :class:`UnoTrainer`, with the guarded update.

    Args:
        module (nn.Module): The trainer; its ``model`` names the units
            (``fsdp_wrap_modules``).
        reshard_after_forward (bool): Free each unit's gathered weights
            after its forward and gather them again in backward (True),
            or keep them until backward (False: faster, more memory).
            The root unit is always kept until backward. Defaults to True.
        param_dtype (str, optional): Compute dtype of the gathered weights
            (``'bfloat16'`` on CUDA); the sharded fp32 weights stay the
            optimizer's. None keeps the weights' dtype. Defaults to None.
        reduce_dtype (str, optional): Dtype of the gradient reduce-scatter
            (``'float32'`` is the safe choice with bf16 compute). None
            means ``param_dtype``. Defaults to None.
        shard_size (int, optional): HSDP: shard over groups of this many
            ranks, replicate across groups. Defaults to None (shard over
            all ranks).
        cpu_offload (bool): Keep sharded weights, gradients and optimizer
            state on the CPU. Defaults to False.
        eval_unshard (bool): Gather all weights for validation and test
            (see the module docstring). Defaults to True.
        accumulate_unsharded (bool): Under gradient accumulation, skip the
            reduce-scatter of non-final micro-batches (less communication,
            but unsharded gradients on every rank). Defaults to False.
    """

    def __init__(self,
                 module: nn.Module,
                 reshard_after_forward: bool = True,
                 param_dtype: Optional[str] = None,
                 reduce_dtype: Optional[str] = None,
                 shard_size: Optional[int] = None,
                 cpu_offload: bool = False,
                 eval_unshard: bool = True,
                 accumulate_unsharded: bool = False):
        super().__init__()
        from torch.distributed.fsdp import (CPUOffloadPolicy,
                                            MixedPrecisionPolicy,
                                            OffloadPolicy, fully_shard)
        if cpu_offload and not torch.cuda.is_available():
            from uno.errors import UnoConfigError
            raise UnoConfigError(
                'model_wrapper_cfg.cpu_offload=True needs a GPU (it moves '
                'shards between GPU and CPU) and none is visible: drop it')
        param, reduce = _dtype(param_dtype), _dtype(reduce_dtype)
        mesh = build_mesh(shard_size)
        offload = CPUOffloadPolicy() if cpu_offload else OffloadPolicy()
        _check_same_weights(module)
        inner = getattr(module, 'model', module)
        units: List[nn.Module] = list(
            inner.fsdp_wrap_modules()
            if hasattr(inner, 'fsdp_wrap_modules') else [])
        for unit in units:
            fully_shard(unit, mesh=mesh,
                        reshard_after_forward=reshard_after_forward,
                        mp_policy=MixedPrecisionPolicy(param, reduce),
                        offload_policy=offload)
        # the root's input is a PackedBatch: only the units cast inputs
        fully_shard(module, mesh=mesh, reshard_after_forward=False,
                    mp_policy=MixedPrecisionPolicy(
                        param, reduce, cast_forward_inputs=False),
                    offload_policy=offload)
        self.module = module
        self.mesh = mesh
        self._units = units
        self._reshard = bool(reshard_after_forward)
        self.eval_unshard = eval_unshard
        self.accumulate_unsharded = accumulate_unsharded
        self._gathered = False
        # the batch goes where the shards are
        module.data_preprocessor.to(_comm_device())
        from mmengine.logging import print_log
        dims = dict(zip(mesh.mesh_dim_names or ('shard', ), mesh.shape))
        print_log(f'UnoFSDP: {len(units)} units and the root over mesh '
                  f'{dims}, compute dtype {param or "as built"}', 'current')

    # ------------------------------------------------------------------
    def train_step(self, data, optim_wrapper) -> dict:
        """The trainer's step, forwarding through the FSDP units."""
        self.release()
        return self.module.train_step(data, optim_wrapper, wrapper=self)

    def val_step(self, data) -> list:
        self.gather()
        return self.module.val_step(data)

    def test_step(self, data) -> list:
        self.gather()
        return self.module.test_step(data)

    def train(self, mode: bool = True) -> 'UnoFSDP':
        if mode:
            self.release()
        return super().train(mode)

    @contextlib.contextmanager
    def no_sync(self):
        """Gradient accumulation: see ``accumulate_unsharded``."""
        if not self.accumulate_unsharded:
            yield
            return
        self.module.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            self.module.set_requires_gradient_sync(True)

    # ------------------------------------------------------------------
    def fsdp_modules(self) -> list:
        """Every FSDP unit, the root last."""
        return self._units + [self.module]

    def gather(self) -> None:
        """Gather every unit's weights and keep them (evaluation)."""
        if not self.eval_unshard or self._gathered:
            return
        for unit in self.fsdp_modules():
            unit.unshard()
            unit.set_reshard_after_forward(False, recurse=False)
        self._gathered = True

    def release(self) -> None:
        """Undo :meth:`gather`: back to sharded weights (no collective)."""
        if not self._gathered:
            return
        for unit in self.fsdp_modules():
            unit.reshard()
            unit.set_reshard_after_forward(
                self._reshard and unit is not self.module, recurse=False)
        self._gathered = False

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)
