"""Collate with broken-sample accounting (FUNCTIONS: ``pack_and_count``).

A file dataset returns ``None`` for a sample it could not read (or a good
sample whose ``meta['broken_skipped']`` counts the broken ones it skipped
with ``max_refetch``). Its own counters live in whichever process read the
sample, a dataloader worker included, so the main process learns about
broken samples from the batches: :func:`pack_and_count` packs like
:func:`~uno.datasets.pack_sequences` and records the counts in the batch's
``broken`` and ``read`` fields, where
:class:`~uno.engine.hooks.BrokenSampleHook` reads them.
"""
from typing import Optional, Sequence

from uno.registry import FUNCTIONS
from uno.structures import PackedBatch, SequencePlan
from uno.structures.packing import pack_sequences
from uno.errors import TrainingStopped


def count_broken(samples: Sequence[Optional[SequencePlan]]) -> int:
    """Broken samples behind a list of dataset outputs.

    Each ``None`` is one; a plan adds its ``meta['broken_skipped']``.
    """
    total = 0
    for sample in samples:
        if sample is None:
            total += 1
        else:
            total += int(sample.meta.get('broken_skipped', 0))
    return total


@FUNCTIONS.register_module()
def pack_and_count(samples: Sequence[Optional[SequencePlan]],
                   latent_stride: int = 8,
                   vit_stride: int = 0,
                   max_tokens: Optional[int] = None) -> PackedBatch:
    """:func:`pack_sequences`, with the ``broken`` and ``read`` counts.

    Args:
        samples (Sequence[SequencePlan | None]): Dataset outputs; ``None``
            marks a broken sample.
        latent_stride (int): See :func:`pack_sequences`. Defaults to 8.
        vit_stride (int): See :func:`pack_sequences`. Defaults to 0.
        max_tokens (int, optional): See :func:`pack_sequences`. Defaults
            to None.

    Returns:
        PackedBatch: With ``broken`` (broken samples behind this batch) and
        ``read`` (samples read, broken included).

    Raises:
        TrainingStopped: When every sample of the batch is broken (a batch
            cannot be empty); set ``max_refetch`` on the dataset to refill
            broken samples instead.
    """
    broken = count_broken(samples)
    if all(s is None for s in samples):
        raise TrainingStopped(
            f'all {len(samples)} samples of a batch were broken (see the '
            'warnings above); set max_refetch on the dataset so broken '
            'samples are replaced by the following ones')
    batch = pack_sequences(samples, latent_stride=latent_stride,
                           vit_stride=vit_stride, max_tokens=max_tokens)
    batch.broken = broken
    batch.read = len(samples) + broken - sum(s is None for s in samples)
    return batch
