"""Training and evaluation hooks (registry ``HOOKS``)."""
from .benchmark_grid_hook import BenchmarkGridHook
from .broken_sample_hook import BrokenSampleHook
from .nonfinite_guard_hook import NonFiniteGuardHook

__all__ = ['BenchmarkGridHook', 'BrokenSampleHook', 'NonFiniteGuardHook']
