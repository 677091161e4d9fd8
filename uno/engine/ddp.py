"""Data parallelism: DDP that keeps uno's training-step contract, and the
CPU process group of torchrun.

mmengine's ``MMDistributedDataParallel.train_step`` updates parameters
itself, which would bypass :meth:`UnoTrainer.train_step` (gradient
accumulation by global counts, the non-finite guard). This wrapper hands
the step to the module, which forwards through DDP (so gradients are
all-reduced, and not on the non-final micro-batches of an accumulated
step).
``find_unused_parameters`` is on by default: an objective at weight 0 or
a batch without metaqueries leaves trainable parameters unused.
On CPU (gloo) DDP takes no ``device_ids``; the Runner passes them anyway,
so they are dropped here when the module is not on CUDA. Under torchrun
without a GPU, :func:`init_cpu_process_group` starts the gloo group
before the Runner (mmengine's launcher assumes CUDA).
"""
import datetime
import os

import torch
from mmengine.model import MMDistributedDataParallel

from uno.errors import UnoConfigError
from uno.registry import MODEL_WRAPPERS

#: collective timeout (seconds) unless env_cfg.dist_cfg.timeout says: a
#: stalled or dead rank stops the others after this long, not gloo's 30
#: minutes (NCCL's default is 10)
DIST_TIMEOUT_S = 900


@MODEL_WRAPPERS.register_module()
class UnoDistributedDataParallel(MMDistributedDataParallel):
    """DDP over :class:`UnoTrainer`, with its training step."""

    def __init__(self, module, device_ids=None, find_unused_parameters=True,
                 **kwargs):
        on_cuda = any(p.is_cuda for p in module.parameters())
        super().__init__(
            module=module,
            device_ids=device_ids if on_cuda else None,
            find_unused_parameters=find_unused_parameters,
            **kwargs)

    def train_step(self, data, optim_wrapper):
        return self.module.train_step(data, optim_wrapper, wrapper=self)


def init_cpu_process_group(dist_cfg: dict) -> None:
    """Start torchrun's process group on a machine without a GPU.

    mmengine's 'pytorch' launcher calls ``torch.cuda.set_device``, which
    fails without a GPU; a group started here (gloo, from torchrun's
    environment, with the collective timeout of ``dist_cfg`` in seconds)
    is kept by the Runner, which starts one only if none exists.
    """
    import torch.distributed as dist
    if dist.is_initialized() or torch.cuda.is_available():
        return
    seconds = dist_cfg.get('timeout', DIST_TIMEOUT_S)
    try:
        dist.init_process_group(
            backend=dist_cfg.get('backend', 'gloo'),
            timeout=datetime.timedelta(seconds=seconds))
    except dist.DistStoreError as e:  # a rank never came (or stalled)
        env = ' '.join(f'{k}={os.environ.get(k)}' for k in (
            'RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'))
        raise UnoConfigError(
            f'--launcher pytorch: not every rank joined within {seconds} s '
            f'(env_cfg.dist_cfg.timeout) at {env}: start all ranks with '
            f'torchrun / tools/dist_train.sh ({str(e).splitlines()[0]})'
        ) from e
