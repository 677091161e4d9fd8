"""Engine: the mmengine boundary (trainer wrapper, runner, checkpoints)."""
from .ddp import UnoDistributedDataParallel
from .hooks import BrokenSampleHook, NonFiniteGuardHook, UnoCheckpointHook
from .loops import AccumulatingTrainLoop
from .optim import TrainableOnlyOptimWrapperConstructor
from .runner import build_runner
from .trainer import PackedBatchPreprocessor, UnoTrainer

__all__ = [
    'UnoTrainer', 'PackedBatchPreprocessor', 'build_runner',
    'TrainableOnlyOptimWrapperConstructor', 'NonFiniteGuardHook',
    'BrokenSampleHook', 'UnoCheckpointHook', 'UnoDistributedDataParallel',
    'AccumulatingTrainLoop'
]
