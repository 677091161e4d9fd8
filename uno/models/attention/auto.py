"""``'auto'``: the backend measured fastest, for configs that do not name
one.

That is :class:`SDPAAttention` (per-sample blocks) on every device today:
flex has no backward on the CPU, and on an H200 at BAGEL-7B shapes a UNO
training step took 0.467 s with sdpa against 0.507 s with compiled flex
(``tools/analysis/gpu_check.py``, docs/benchmarks.md); compiled flex
also needs a head dim of at least 16. Should a measurement change that on
some device, the choice by the tensors' device goes here, so that one
model config still trains on a GPU machine and is tested on a CPU one.
"""
from uno.registry import ATTENTION
from .sdpa import SDPAAttention


@ATTENTION.register_module(name='auto')
class AutoAttention(SDPAAttention):
    """SDPA on every device at present (see the module docstring)."""
