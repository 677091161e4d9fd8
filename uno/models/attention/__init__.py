"""Attention backends over packed sequences (registry ``ATTENTION``)."""
from .base import AttentionBackend, EagerAttention
from .sdpa import SDPAAttention

__all__ = ['AttentionBackend', 'EagerAttention', 'SDPAAttention']
