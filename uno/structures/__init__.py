"""Data structures shared by datasets, models and objectives: sequence
plans and their builders (:mod:`.plans`), the packer (:mod:`.packing`) and
the packed batch and its noisy latents."""
from .noisy_latents import NoisyLatents
from .packed_batch import PackedBatch
from .sequence_plan import (ATTN_MODES, IMAGE_KINDS, SEGMENT_KINDS,
                            TEXT_KINDS, Segment, SequencePlan)

__all__ = [
    'NoisyLatents', 'PackedBatch', 'Segment', 'SequencePlan',
    'SEGMENT_KINDS', 'TEXT_KINDS', 'IMAGE_KINDS', 'ATTN_MODES'
]
