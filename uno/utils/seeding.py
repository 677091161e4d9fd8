"""One rule for seeds derived from a run's seed and indices.

Training noise is keyed by (seed, iteration, sample index), validation and
benchmark noise by (seed, first item's index), so a result does not depend
on the rank, batch or order an item lands in, and a resumed run draws what
the interrupted one would have.
"""
import torch

# one odd prime multiplier per key position
_MULTIPLIERS = (1_000_003, 1_000_033, 1_000_037, 1_000_039)


def derive_seed(seed: int, *keys: int) -> int:
    """A seed in ``[0, 2**63)`` for ``seed`` and up to four integer keys.

    ``derive_seed(s, a) = s * 1000003 + a`` and ``derive_seed(s, a, b) =
    (s * 1000003 + a) * 1000033 + b`` (mod ``2**63``): distinct small keys
    give distinct seeds.
    """
    if len(keys) > len(_MULTIPLIERS):
        raise ValueError(f'at most {len(_MULTIPLIERS)} keys, got {len(keys)}')
    value = int(seed)
    for mult, key in zip(_MULTIPLIERS, keys):
        value = value * mult + int(key)
    return value % 2**63


def derived_generator(seed: int, *keys: int,
                      device='cpu') -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with
    :func:`derive_seed`."""
    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(seed, *keys))
    return gen
