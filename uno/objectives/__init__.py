"""Training objectives (registry ``OBJECTIVES``) and the ObjectiveSet."""
from .base import BaseObjective, ObjectiveResult
from .flow_matching import FlowMatchingObjective
from .objective_set import ObjectiveSet
from .timestep_samplers import sample_timesteps, shift_timesteps

__all__ = [
    'BaseObjective', 'ObjectiveResult', 'ObjectiveSet',
    'FlowMatchingObjective', 'sample_timesteps', 'shift_timesteps'
]
