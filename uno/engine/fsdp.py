"""FSDP2 (``fully_shard``) over :class:`UnoTrainer`, for BAGEL-size models.

docs/distributed.md#fsdp describes the units, precision, HSDP, the
evaluation gather and the sharded checkpoints.
"""
import contextlib
from typing import Optional

import torch
from mmengine.logging import print_log
from torch import nn

from uno.errors import UnoConfigError
from uno.registry import MODEL_WRAPPERS

_DTYPES = dict(bf16=torch.bfloat16, bfloat16=torch.bfloat16,
               fp16=torch.float16, float16=torch.float16,
               fp32=torch.float32, float32=torch.float32)


def _dtype(name) -> Optional[torch.dtype]:
    if name is None or isinstance(name, torch.dtype):
        return name
    from uno.utils.config_check import check_keys
    check_keys([name], _DTYPES, 'dtype', ' in model_wrapper_cfg')
    return _DTYPES[name]


def _comm_device() -> torch.device:
    """Where collectives and the batch go: this rank's GPU, else the CPU."""
    from mmengine.device import get_device
    if get_device() == 'cuda':
        return torch.device('cuda', torch.cuda.current_device())
    return torch.device('cpu')


def build_mesh(shard_size: Optional[int] = None):
    """A 1-D mesh over all ranks, or ``(replicate, shard)`` for HSDP:
    copies sharded over ``shard_size`` ranks (e.g. one node's GPUs)."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    world, device = dist.get_world_size(), _comm_device().type
    if not shard_size or shard_size == world:
        return init_device_mesh(device, (world, ))
    if world % shard_size:
        raise UnoConfigError(f'model_wrapper_cfg.shard_size={shard_size} '
                             f'does not divide the world size {world}')
    return init_device_mesh(device, (world // shard_size, shard_size),
                            mesh_dim_names=('replicate', 'shard'))


def _check_same_weights(module: nn.Module) -> None:
    """FSDP does not broadcast rank 0's weights, as DDP does: compare a
    fingerprint of every rank's."""
    import torch.distributed as dist
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


@MODEL_WRAPPERS.register_module()
class UnoFSDP(nn.Module):
    """FSDP2 over :class:`UnoTrainer`, with its training step.

    Shards the units the model names (``fsdp_wrap_modules``), then the
    trainer as the root unit.

    Args:
        module (nn.Module): The trainer.
        reshard_after_forward (bool): Free each unit's gathered weights
            after its forward (True) or keep them until backward (faster,
            more memory). The root always keeps them. Defaults to True.
        param_dtype (str, optional): Compute dtype of the gathered weights
            (``'bfloat16'`` on GPUs). None: as built. Defaults to None.
        reduce_dtype (str, optional): Dtype of the gradient
            reduce-scatter. None: ``param_dtype``. Defaults to None.
        shard_size (int, optional): HSDP: shard over groups of this many
            ranks, replicate across them. Defaults to None (all ranks).
        cpu_offload (bool): Keep shards, gradients and optimizer state on
            the CPU (GPU runs only). Defaults to False.
        eval_unshard (bool): Gather all weights once for validation and
            test, so ranks may run different numbers of forwards.
            Defaults to True.
        accumulate_unsharded (bool): Under gradient accumulation, skip the
            reduce-scatter of non-final micro-batches. Defaults to False.
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
            raise UnoConfigError(
                'model_wrapper_cfg.cpu_offload=True needs a GPU (it moves '
                'shards between GPU and CPU) and none is visible: drop it')
        param, reduce = _dtype(param_dtype), _dtype(reduce_dtype)
        mesh = build_mesh(shard_size)
        offload = CPUOffloadPolicy() if cpu_offload else OffloadPolicy()
        _check_same_weights(module)
        inner = getattr(module, 'model', module)
        units = list(inner.fsdp_wrap_modules()
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
        self.module, self.mesh, self._units = module, mesh, units
        self._reshard = bool(reshard_after_forward)
        self.eval_unshard = eval_unshard
        self.accumulate_unsharded = accumulate_unsharded
        self._gathered = False
        module.data_preprocessor.to(_comm_device())  # batches follow
        dims = dict(zip(mesh.mesh_dim_names or ('shard', ), mesh.shape))
        print_log(f'UnoFSDP: {len(units)} units and the root over mesh '
                  f'{dims}, compute dtype {param or "as built"}', 'current')

    def train_step(self, data, optim_wrapper) -> dict:
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
        """mmengine's accumulation context: see ``accumulate_unsharded``."""
        if not self.accumulate_unsharded:
            yield
            return
        self.module.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            self.module.set_requires_gradient_sync(True)

    def gather(self) -> None:
        """Gather every unit's weights and keep them (evaluation)."""
        if not self.eval_unshard or self._gathered:
            return
        for unit in self._units + [self.module]:
            unit.unshard()
            unit.set_reshard_after_forward(False, recurse=False)
        self._gathered = True

    def release(self) -> None:
        """Undo :meth:`gather` (no collective)."""
        if not self._gathered:
            return
        for unit in self._units + [self.module]:
            unit.reshard()
            unit.set_reshard_after_forward(
                self._reshard and unit is not self.module, recurse=False)
        self._gathered = False

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)
