"""Attention backends over packed sequences (registry ``ATTENTION``).

``sdpa`` and ``eager`` run everywhere; ``flex`` trains on CUDA only (its
forward also runs on the CPU); ``xformers`` needs CUDA and the xformers
extra; ``auto`` picks flex on CUDA and sdpa elsewhere. None of them
imports its optional dependency at module import.
"""
from .auto import AutoAttention
from .base import AttentionBackend, EagerAttention
from .flex import FlexAttention
from .sdpa import SDPAAttention
from .xformers import XFormersAttention

__all__ = [
    'AttentionBackend', 'EagerAttention', 'SDPAAttention', 'FlexAttention',
    'XFormersAttention', 'AutoAttention'
]
