"""Engine: the mmengine boundary (trainer wrapper, runner, checkpoints)."""
from . import checkpoint  # noqa: F401  (trusted loader, atomic writes)
from .ddp import UnoDistributedDataParallel
from .hooks import BrokenSampleHook, NonFiniteGuardHook
from .optim import TrainableOnlyOptimWrapperConstructor
from .runner import build_runner
from .trainer import PackedBatchPreprocessor, UnoTrainer

__all__ = [
    'UnoTrainer', 'PackedBatchPreprocessor', 'build_runner',
    'TrainableOnlyOptimWrapperConstructor', 'NonFiniteGuardHook',
    'BrokenSampleHook', 'UnoDistributedDataParallel'
]
