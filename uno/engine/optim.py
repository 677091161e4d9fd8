"""The optimizer over trainable parameters only."""
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from torch import nn

from uno.registry import OPTIM_WRAPPER_CONSTRUCTORS


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class TrainableOnlyOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """mmengine's default constructor without frozen parameters
    (``requires_grad=False``: no weight decay or state touches them).

    Per-expert groups come from ``paramwise_cfg.custom_keys``, e.g.
    ``{'experts.gen': dict(lr_mult=2.0)}``.
    """

    def __call__(self, model: nn.Module) -> OptimWrapper:
        if not any(p.requires_grad for p in model.parameters()):
            raise ValueError('the model has no trainable parameter: check '
                             'model.freeze in the config')
        wrapper = super().__call__(model)
        groups = wrapper.optimizer.param_groups
        for group in groups:
            group['params'] = [p for p in group['params'] if p.requires_grad]
        wrapper.optimizer.param_groups = [g for g in groups if g['params']]
        return wrapper
