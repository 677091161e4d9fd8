"""The optimizer sees trainable parameters only; groups by expert."""
import pytest
import torch
from mmengine.optim import build_optim_wrapper

from tests.conftest import UNO_OBJECTIVES
from uno.engine import UnoTrainer


def _wrapper(trainer, **extra):
    import uno.engine  # noqa: F401  (registers the constructor)
    cfg = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3),
               constructor='uno.TrainableOnlyOptimWrapperConstructor',
               **extra)
    return build_optim_wrapper(trainer, cfg)


def test_only_trainable_parameters(uno_model_cfg):
    trainer = UnoTrainer(model=uno_model_cfg, objectives=UNO_OBJECTIVES)
    params = {id(p) for g in _wrapper(trainer).optimizer.param_groups
              for p in g['params']}
    trainable = {id(p) for p in trainer.parameters() if p.requires_grad}
    assert params == trainable
    frozen = [p for n, p in trainer.named_parameters()
              if '.experts.und.' in n]
    assert frozen and not any(id(p) in params for p in frozen)


def test_expert_param_groups_from_config(uno_model_cfg):
    trainer = UnoTrainer(model=uno_model_cfg, objectives=UNO_OBJECTIVES)
    wrapper = _wrapper(trainer, paramwise_cfg=dict(
        custom_keys={'experts.gen': dict(lr_mult=2.0)}))
    names = {id(p): n for n, p in trainer.named_parameters()}
    for group in wrapper.optimizer.param_groups:
        for p in group['params']:
            expected = 2e-3 if '.experts.gen.' in names[id(p)] else 1e-3
            assert group['lr'] == pytest.approx(expected)
            assert p.requires_grad


def test_fully_frozen_model_is_a_clear_error(uno_model_cfg):
    trainer = UnoTrainer(model=uno_model_cfg, objectives=UNO_OBJECTIVES)
    for p in trainer.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match='no trainable parameter'):
        _wrapper(trainer)
    assert torch.is_tensor(next(trainer.parameters()))
