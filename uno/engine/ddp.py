"""DDP that keeps uno's training step, and torchrun's CPU process group
(docs/distributed.md#ddp-with-toolsdist_trainsh)."""
import datetime
import os

import torch
from mmengine.model import MMDistributedDataParallel

from uno.errors import UnoConfigError
from uno.registry import MODEL_WRAPPERS

#: collective timeout (s) unless env_cfg.dist_cfg.timeout says: a stalled
#: or dead rank stops the others after this long, not gloo's 30 minutes
DIST_TIMEOUT_S = 900


@MODEL_WRAPPERS.register_module()
class UnoDistributedDataParallel(MMDistributedDataParallel):
    """DDP whose ``train_step`` is :meth:`UnoTrainer.train_step` (mmengine's
    updates the parameters itself), forwarding through DDP.

    ``find_unused_parameters`` defaults to True: an objective at weight 0
    or a batch without metaqueries leaves parameters unused. ``device_ids``
    are dropped for a module not on CUDA (gloo).
    """

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
    """Start torchrun's gloo group on a machine without a GPU (mmengine's
    'pytorch' launcher calls ``torch.cuda.set_device``); the Runner keeps
    an existing group. The timeout is ``dist_cfg['timeout']`` seconds."""
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
