"""Training objectives (registry ``OBJECTIVES``) and the ObjectiveSet."""
from .base import BaseObjective, ObjectiveResult
from .captioning import CaptioningObjective
from .flow_matching import FlowMatchingObjective
from .objective_set import ObjectiveSet, Prepared
from .timestep_samplers import sample_timesteps, shift_timesteps
from .token_attributes import TokenAttributeObjective
from .visual_regression import VisualRegressionObjective, resample_tokens

__all__ = [
    'BaseObjective', 'ObjectiveResult', 'ObjectiveSet', 'Prepared',
    'FlowMatchingObjective', 'CaptioningObjective',
    'VisualRegressionObjective', 'TokenAttributeObjective',
    'resample_tokens', 'sample_timesteps',
    'shift_timesteps'
]
