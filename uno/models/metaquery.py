"""Learnable metaquery tokens, a standalone parameter.

The K queries are inserted as ``metaquery`` segments; the frozen
understanding expert processes them after the noisy latents and their
outputs regress the clean image's understanding features. They are not
tokenizer entries (growing the vocabulary would change checkpoint shapes
with K and need gradient-hook freezing, which weight decay bypasses).
"""
import torch
from torch import Tensor, nn


class MetaQueryTokens(nn.Module):
    """``K`` learnable vectors of width ``D``; ``K = 0`` disables them.

    Args:
        num_queries (int): ``K``. Defaults to 0.
        hidden_size (int): ``D``.
        init_std (float): Normal init std. Defaults to 0.02.
    """

    def __init__(self, num_queries: int = 0, hidden_size: int = 64,
                 init_std: float = 0.02):
        super().__init__()
        if num_queries < 0:
            raise ValueError(
                f'model.metaquery.num_queries must be >= 0, got '
                f'{num_queries}')
        self.num_queries = num_queries
        self.weight = nn.Parameter(torch.randn(num_queries, hidden_size) *
                                   init_std)

    @property
    def enabled(self) -> bool:
        return self.num_queries > 0

    def forward(self, slots: Tensor) -> Tensor:
        """Embeddings of the given slots ``(N,)`` -> ``(N, D)``."""
        return self.weight.index_select(0, slots)
