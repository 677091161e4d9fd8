"""Training and evaluation hooks (registry ``HOOKS``)."""
from .benchmark_grid_hook import BenchmarkGridHook
from .broken_sample_hook import BrokenSampleHook
from .checkpoint_hook import UnoCheckpointHook
from .gradient_flow_hook import GradientFlowHook
from .nonfinite_guard_hook import NonFiniteGuardHook

__all__ = [
    'BenchmarkGridHook', 'BrokenSampleHook', 'GradientFlowHook',
    'NonFiniteGuardHook', 'UnoCheckpointHook'
]
