"""Helpers to run a :class:`UnoModel` on parts of a packed batch.

The samplers lay a sequence out exactly as in training (a packed batch
from the task's plans), then run the decoder on two parts of it: a prefix
(the condition) once, keeping a :class:`KVCache`, and later tokens
against that cache. These helpers select the parts' embeddings, routes
and masks from the packed batch, so both parts see exactly the keys and
positions they would see in the full sequence.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from uno.models.mot.decoder import KVCache, Routes, make_routes
from uno.structures import PackedBatch


def model_device_dtype(model: nn.Module) -> Tuple[torch.device, torch.dtype]:
    """Device and floating dtype of ``model`` (its token embeddings)."""
    weight = model.embed_tokens.weight
    return weight.device, weight.dtype


def local_routes(batch: PackedBatch, index: Tensor) -> Routes:
    """Expert routes of the tokens at ``index`` ``(N,)``, numbered by their
    rank in ``index`` (the rows of the decoder's input)."""
    is_gen = torch.zeros(batch.num_tokens, dtype=torch.bool,
                         device=index.device)
    is_gen[batch.gen_index] = True
    gen = is_gen[index]  # (N,)
    return make_routes(torch.nonzero(~gen).flatten(),
                       torch.nonzero(gen).flatten())


def rank_in(index: Tensor, positions: Tensor) -> Tensor:
    """Rows of ``positions`` inside the sorted ``index`` (both ``(N,)``)."""
    return torch.searchsorted(index, positions)


def run_decoder(model: nn.Module,
                batch: PackedBatch,
                x: Tensor,
                index: Tensor,
                mask,
                past: Optional[KVCache] = None,
                cache: Optional[KVCache] = None) -> Tensor:
    """Run ``model.decoder`` on the tokens at ``index`` of ``batch``.

    Args:
        model (nn.Module): A :class:`UnoModel`.
        batch (PackedBatch): The full packed sequence.
        x (Tensor): Embeddings of those tokens ``(N, D)``.
        index (Tensor): Their sorted positions in ``batch`` ``(N,)``.
        mask: The attention backend's mask for these queries over
            ``past`` followed by themselves.
        past (KVCache, optional): Cached prefix. Defaults to None.
        cache (KVCache, optional): Empty cache to fill. Defaults to None.

    Returns:
        Tensor: Final hidden states ``(N, D)``.
    """
    hidden, _ = model.decoder(x, batch.position_ids[index],
                              local_routes(batch, index), model.attention,
                              mask, past=past, cache=cache)
    return hidden


def prefill(model: nn.Module, batch: PackedBatch, x: Tensor,
            index: Tensor) -> Tuple[Tensor, KVCache]:
    """Encode the prefix tokens at ``index`` once.

    The prefix must not see any token outside it (true for segments
    before a noisy image, and for causal text before later text).

    Args:
        model (nn.Module): A :class:`UnoModel`.
        batch (PackedBatch): The full packed sequence.
        x (Tensor): Embeddings of the prefix tokens ``(N, D)``.
        index (Tensor): Their sorted positions ``(N,)``.

    Returns:
        tuple[Tensor, KVCache]: Hidden states ``(N, D)`` and the cache.
    """
    mask = model.attention.prepare(batch, index, index)
    cache = KVCache()
    hidden = run_decoder(model, batch, x, index, mask, cache=cache)
    return hidden, cache
