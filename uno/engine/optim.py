"""Optimizer construction from the trainable parameters only.

Frozen parameters (``requires_grad=False``: the understanding expert under
UNO, the latent encoder) never enter the optimizer, so no weight decay or
optimizer state touches them. Parameter groups by expert come from
mmengine's ``paramwise_cfg.custom_keys`` keyed on the naming contract, e.g.
``custom_keys={'experts.gen': dict(lr_mult=2.0)}``.
"""
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from torch import nn

from uno.registry import OPTIM_WRAPPER_CONSTRUCTORS


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class TrainableOnlyOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """mmengine's default constructor, restricted to trainable parameters.
    """

    def __call__(self, model: nn.Module) -> OptimWrapper:
        if not any(p.requires_grad for p in model.parameters()):
            raise ValueError('the model has no trainable parameter: check '
                             'model.freeze in the config')
        wrapper = super().__call__(model)
        optimizer = wrapper.optimizer
        groups = []
        for group in optimizer.param_groups:
            group['params'] = [p for p in group['params'] if p.requires_grad]
            if group['params']:
                groups.append(group)
        optimizer.param_groups = groups
        return wrapper
