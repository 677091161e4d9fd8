"""Training hooks (registry ``HOOKS``)."""
from .broken_sample_hook import BrokenSampleHook
from .nonfinite_guard_hook import NonFiniteGuardHook

__all__ = ['BrokenSampleHook', 'NonFiniteGuardHook']
