"""``'auto'``: the backend measured fastest on the data's device.

That is :class:`SDPAAttention` (per-sample blocks) on every device today:
flex has no backward on the CPU, and on an H200 at BAGEL-7B shapes a UNO
training step took 0.467 s with sdpa against 0.507 s with compiled flex
(``tools/analysis/gpu_check.py``, docs/benchmarks.md); compiled flex
also needs a head dim of at least 16. The choice is made per call from
the device of the batch (``prepare``) and of the queries (``forward``),
so when a measurement changes it, one model config still trains on a GPU
machine and is tested on a CPU one.
"""
from typing import Any, Optional

import torch
from torch import Tensor

from uno.registry import ATTENTION
from uno.structures import PackedBatch
from .base import AttentionBackend
from .sdpa import SDPAAttention


@ATTENTION.register_module(name='auto')
class AutoAttention(AttentionBackend):
    """Delegate to the backend measured fastest on the tensors' device
    (SDPA everywhere at present; see the module docstring)."""

    def __init__(self):
        super().__init__()
        self.sdpa = SDPAAttention()

    @property
    def trains_on_cpu(self) -> bool:
        return True  # the CPU always resolves to sdpa

    def resolve(self, device: torch.device) -> AttentionBackend:
        """The backend used for tensors on ``device``."""
        return self.sdpa

    def prepare(self,
                batch: PackedBatch,
                query_index: Optional[Tensor] = None,
                key_index: Optional[Tensor] = None) -> Any:
        return self.resolve(batch.device).prepare(batch, query_index,
                                                  key_index)

    def prepare_dense(self, mask: Tensor) -> Any:
        return self.resolve(mask.device).prepare_dense(mask)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, mask: Any) -> Tensor:
        return self.resolve(q.device)(q, k, v, mask)
