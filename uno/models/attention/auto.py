"""``'auto'``: the fastest backend that works on the data's device.

On CUDA it uses :class:`FlexAttention` (compiled) when this torch has
flex_attention; everywhere else :class:`SDPAAttention`, because flex has
no backward on the CPU. The choice is made per call from the device of
the batch (``prepare``) and of the queries (``forward``), so one model
config trains on a GPU machine and is tested on a CPU one.
"""
from typing import Any, Optional

import torch
from torch import Tensor

from uno.registry import ATTENTION
from uno.structures import PackedBatch
from .base import AttentionBackend
from .sdpa import SDPAAttention


def flex_available() -> bool:
    """Whether this torch ships ``torch.nn.attention.flex_attention``."""
    try:
        import torch.nn.attention.flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


@ATTENTION.register_module(name='auto')
class AutoAttention(AttentionBackend):
    """Delegate to flex on CUDA (if available), else to SDPA.

    Args:
        compile (bool): Compile the flex backend on CUDA. Defaults to True.
    """

    def __init__(self, compile: bool = True):
        super().__init__()
        self.compile = compile
        self.sdpa = SDPAAttention()
        self.flex: Optional[AttentionBackend] = None  # built on first use

    @property
    def trains_on_cpu(self) -> bool:
        return True  # the CPU always resolves to sdpa

    def resolve(self, device: torch.device) -> AttentionBackend:
        """The backend used for tensors on ``device``."""
        if torch.device(device).type != 'cuda' or not flex_available():
            return self.sdpa
        if self.flex is None:
            from .flex import FlexAttention
            self.flex = FlexAttention(compile=self.compile)
        return self.flex

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
