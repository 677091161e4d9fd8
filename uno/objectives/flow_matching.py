"""Rectified-flow matching on the noisy latent tokens (velocity MSE).

``x_t = (1 - t) x_0 + t eps`` with the target velocity ``v = eps - x_0``
(pointing from data to noise), per-image ``t`` from a logit-normal or
uniform distribution with a shift, as in BAGEL's ``Bagel.forward``. The
loss of a token is the squared error averaged over its channels; the sum
runs over tokens, so :class:`ObjectiveSet` divides by the global token
count.
"""
from typing import List, Optional

import torch

from uno.models.outputs import ModelOutputs
from uno.registry import OBJECTIVES
from uno.structures import NoisyLatents, PackedBatch
from .base import BaseObjective, ObjectiveResult
from .timestep_samplers import SAMPLERS, sample_timesteps


@OBJECTIVES.register_module()
class FlowMatchingObjective(BaseObjective):
    """Velocity MSE on noisy latents.

    It also *prepares* the noisy latents every other objective of the UNO
    sequence reads (captioning and regression use the same ``x_t`` and
    ``t``), so it stays in the set even at weight 0.

    Args:
        weight (float): Loss weight. Defaults to 1.0.
        timestep_sampler (str): ``'logit_normal'`` or ``'uniform'``.
            Defaults to ``'logit_normal'``.
        shift (float): Timestep shift. Defaults to 1.0.
        loc (float): Logit-normal mean. Defaults to 0.0.
        scale (float): Logit-normal std. Defaults to 1.0.
    """
    requires = ('velocity', )
    always_prepare = True

    def __init__(self,
                 weight: float = 1.0,
                 timestep_sampler: str = 'logit_normal',
                 shift: float = 1.0,
                 loc: float = 0.0,
                 scale: float = 1.0):
        super().__init__(weight)
        if timestep_sampler not in SAMPLERS:
            raise ValueError(f'unknown timestep_sampler '
                             f'{timestep_sampler!r}; expected one of '
                             f'{SAMPLERS}')
        if shift <= 0:
            raise ValueError(f'shift must be > 0, got {shift}')
        self.timestep_sampler = timestep_sampler
        self.shift, self.loc, self.scale = shift, loc, scale

    def prepare(self,
                model,
                batch: PackedBatch,
                generator: Optional[torch.Generator] = None,
                noise_seeds: Optional[List[int]] = None
                ) -> Optional[NoisyLatents]:
        """Draw ``t`` and ``eps`` per noisy image (from ``noise_seeds`` when
        given, one per noisy image) and return the noisy latents."""
        if batch.noisy_images.numel() == 0:
            return None
        x0 = model.encode_latents(batch.images[batch.noisy_images])
        x0 = x0.flatten(0, 1)  # (N_noisy, C), ordered like noisy_index
        seeds = noise_seeds
        if seeds is None:
            t = sample_timesteps(
                batch.noisy_images.numel(), self.timestep_sampler,
                self.shift, self.loc, self.scale, device=x0.device,
                generator=generator)  # (I_noisy,)
            eps = torch.randn(x0.shape, generator=generator,
                              device=x0.device, dtype=x0.dtype)
        else:
            t, eps = self._per_image_noise(batch, x0, seeds)
        tt = t[batch.noisy_group][:, None].to(x0.dtype)  # (N_noisy, 1)
        return NoisyLatents(latents=(1 - tt) * x0 + tt * eps, timesteps=t,
                            clean=x0, target=eps - x0)

    def _per_image_noise(self, batch: PackedBatch, x0, seeds):
        """``t`` and ``eps`` of each noisy image from its own seed.

        Keyed by the image (sample index and step), the noise does not
        depend on which rank or micro-batch the image lands in, so N
        processes with batch B draw what one process with batch N*B
        draws.
        """
        counts = torch.bincount(batch.noisy_group.cpu(),
                                minlength=len(seeds)).tolist()
        ts, eps = [], []
        for seed, n in zip(seeds, counts):
            gen = torch.Generator(device=x0.device)
            gen.manual_seed(int(seed))
            ts.append(sample_timesteps(
                1, self.timestep_sampler, self.shift, self.loc, self.scale,
                device=x0.device, generator=gen))
            eps.append(torch.randn((n, x0.shape[1]), generator=gen,
                                   device=x0.device, dtype=x0.dtype))
        return torch.cat(ts), torch.cat(eps)  # (I_noisy,), (N_noisy, C)

    def count(self, batch: PackedBatch,
              noisy: Optional[NoisyLatents] = None,
              state=None) -> torch.Tensor:
        """The noisy latent tokens (0 without noisy images)."""
        n = 0 if noisy is None or noisy.target is None else \
            noisy.target.shape[0]
        return torch.tensor(float(n), device=batch.device)

    def forward(self, outputs: ModelOutputs, batch: PackedBatch,
                noisy: Optional[NoisyLatents] = None,
                state=None) -> ObjectiveResult:
        count = self.count(batch, noisy, state)
        target = None if noisy is None else noisy.target  # (N_noisy, C)
        if target is None or outputs.velocity is None:
            # no noisy image in this batch (e.g. captioning samples only)
            return ObjectiveResult(batch.images.new_zeros(()), count)
        err = (outputs.velocity.float() - target.float()).pow(2).mean(-1)
        return ObjectiveResult(
            err.sum(), count, per_item=err.detach(),  # err: (N_noisy,)
            item_sample=batch.sample_ids[batch.noisy_index])
