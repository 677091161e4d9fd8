"""Mixture-of-Transformers decoder (per-expert weights, shared attention)."""
from .config import MoTConfig
from .decoder import (EXPERTS, ExpertBlock, MoTDecoder, MoTDecoderLayer,
                      make_routes)
from .layers import RMSNorm, RotaryEmbedding, SwiGLU, apply_rotary

__all__ = [
    'MoTConfig', 'MoTDecoder', 'MoTDecoderLayer', 'ExpertBlock', 'EXPERTS',
    'make_routes', 'RMSNorm', 'RotaryEmbedding', 'SwiGLU', 'apply_rotary'
]
