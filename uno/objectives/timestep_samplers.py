"""Timestep distributions and the timestep shift of rectified flow.

Pure functions, so each can be tested against its closed form. The
convention is BAGEL's: ``t = 1`` is pure noise, ``t = 0`` the data.
"""
from typing import Optional

import torch
from torch import Tensor

from uno.utils.timesteps import shift_timesteps

__all__ = ['SAMPLERS', 'sample_timesteps', 'shift_timesteps']

SAMPLERS = ('logit_normal', 'uniform')


def sample_timesteps(n: int,
                     kind: str = 'logit_normal',
                     shift: float = 1.0,
                     loc: float = 0.0,
                     scale: float = 1.0,
                     device=None,
                     generator: Optional[torch.Generator] = None) -> Tensor:
    """Draw ``n`` timesteps in ``[0, 1]``.

    Args:
        n (int): Number of timesteps.
        kind (str): ``'logit_normal'`` (``sigmoid(N(loc, scale))``, BAGEL's
            default) or ``'uniform'``. Defaults to ``'logit_normal'``.
        shift (float): Timestep shift applied after sampling. Defaults to
            1.0 (none).
        loc (float): Mean of the logit-normal. Defaults to 0.0.
        scale (float): Std of the logit-normal. Defaults to 1.0.
        device: Device of the result.
        generator (torch.Generator, optional): RNG. Defaults to the global.

    Returns:
        Tensor: ``(n,)`` float32 timesteps.
    """
    if kind == 'logit_normal':
        z = torch.randn(n, generator=generator, device=device)
        t = torch.sigmoid(z * scale + loc)
    elif kind == 'uniform':
        t = torch.rand(n, generator=generator, device=device)
    else:
        raise ValueError(f'unknown timestep sampler {kind!r}; expected one '
                         f'of {SAMPLERS}')
    return shift_timesteps(t, shift)
