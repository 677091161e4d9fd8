"""NoisyLatents: the noisy images of a packed batch, as the model reads them.

Flow matching's preparation draws them (``x_t = (1 - t) x_0 + t eps``) and
the training step passes them to the model as an argument; the sampler
builds them at each denoising step. Objectives read the timesteps (UNO's
timestep windows) and the flow target from the same object.
"""
from dataclasses import dataclass
from typing import Optional

from torch import Tensor


@dataclass
class NoisyLatents:
    """The noisy latent tokens of a batch and their timesteps.

    Attributes:
        latents (Tensor): ``(N_noisy, C)`` noisy latent tokens ``x_t``,
            ordered like ``batch.noisy_index``.
        timesteps (Tensor): ``(I_noisy,)`` ``t`` of each noisy image (an
            index of ``batch.noisy_images``); t = 0 is clean.
        clean (Tensor, optional): ``(N_noisy, C)`` the clean latents
            ``x_0`` (training only).
        target (Tensor, optional): ``(N_noisy, C)`` the velocity target
            ``eps - x_0`` (training only).
    """
    latents: Tensor
    timesteps: Tensor
    clean: Optional[Tensor] = None
    target: Optional[Tensor] = None

    def token_timesteps(self, noisy_group: Tensor) -> Tensor:
        """``(N_noisy,)`` the timestep of each noisy token's image."""
        return self.timesteps[noisy_group]
