"""Training hooks (registry ``HOOKS``)."""
from .nonfinite_guard_hook import NonFiniteGuardHook

__all__ = ['NonFiniteGuardHook']
