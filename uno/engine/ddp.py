"""DistributedDataParallel that keeps uno's training-step contract.

mmengine's ``MMDistributedDataParallel.train_step`` updates parameters
itself, which would bypass :meth:`UnoTrainer.train_step` (gradient
accumulation by global counts, the non-finite guard). This wrapper hands
the step to the module, which forwards through DDP (so gradients are
all-reduced, and not on the non-final micro-batches of an accumulated
step).
``find_unused_parameters`` is on by default: an objective at weight 0 or
a batch without metaqueries leaves trainable parameters unused.
On CPU (gloo) DDP takes no ``device_ids``; the Runner passes them anyway,
so they are dropped here when the module is not on CUDA.
"""
from mmengine.model import MMDistributedDataParallel

from uno.registry import MODEL_WRAPPERS


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
