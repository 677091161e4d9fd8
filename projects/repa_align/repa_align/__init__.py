"""REPA-style representation alignment as a uno proxy objective."""
from .repa_objective import RepaAlignmentObjective

__all__ = ['RepaAlignmentObjective']
