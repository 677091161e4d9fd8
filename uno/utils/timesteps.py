"""The timestep shift shared by training and sampling."""
from torch import Tensor


def shift_timesteps(t: Tensor, shift: float) -> Tensor:
    """``t' = s t / (1 + (s - 1) t)``; ``s > 1`` moves mass to high noise.

    Training draws its timesteps through it
    (:func:`uno.objectives.timestep_samplers.sample_timesteps`) and the
    flow sampler shifts its grid with it, so both mean the same ``s``.
    """
    if shift == 1.0:
        return t
    return shift * t / (1 + (shift - 1) * t)
