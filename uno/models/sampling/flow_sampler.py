"""Text-to-image sampling: Euler integration of the learned flow.

Follows BAGEL's ``generate_image`` (``modeling/bagel/bagel.py``): timesteps
``linspace(1, 0)`` mapped by the shift ``t' = s t / (1 + (s - 1) t)``,
Euler steps ``x <- x - v dt`` from noise (``t = 1``) to data (``t = 0``)
under the convention ``x_t = (1 - t) x_0 + t eps`` and ``v = eps - x_0``,
and text classifier-free guidance ``v = v_u + s (v_c - v_u)`` inside
``cfg_interval`` (BAGEL's test ``lo < t <= hi``). BAGEL's ``num_timesteps``
counts grid points (50 points = 49 model calls); here ``num_steps`` counts
model calls (``num_steps + 1`` grid points).

The sequence is laid out exactly as in training: :func:`t2i_plan` per
prompt (``<bos> prompt <eos>``, then ``<vision_start> latents
<vision_end>``), with the unconditional copies (empty prompt ``<bos>
<eos>``) packed after the conditional ones so one forward per step gives
both velocities. Because a noisy image is invisible to its prompt, the
prompts' keys and values do not depend on the step: with
``use_kv_cache=True`` they are encoded once per image and every step runs
only the noisy segments' tokens against that cache.
"""
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from uno.structures.packing import pack_sequences
from uno.structures.plans import t2i_plan
from uno.structures import NoisyLatents, PackedBatch, SequencePlan
from uno.models.mot.decoder import put_rows
from uno.utils.timesteps import shift_timesteps
from .packed_cache import model_device_dtype, prefill, rank_in, run_decoder


def t2i_plans(prompts: Sequence[Sequence[int]], tokenizer,
              image_size: int) -> List[SequencePlan]:
    """T2I plans of ``prompts`` around blank ``image_size`` canvases."""
    canvas = torch.zeros(3, image_size, image_size)
    return [SequencePlan(t2i_plan(p, tokenizer), images=[canvas])
            for p in prompts]


def _noisy_image(plan: SequencePlan) -> Tensor:
    noisy = [s for s in plan.segments if s.kind == 'noisy_latent']
    if len(noisy) != 1 or plan.segments[-1] is not noisy[0]:
        raise ValueError('a sampling plan must end with its one noisy '
                         'image segment')
    return plan.images[noisy[0].image]


class _FullVelocity:
    """Velocities from a full forward of the whole packed sequence."""

    def __init__(self, model: nn.Module, batch: PackedBatch, num: int):
        self.model, self.batch, self.num = model, batch, num
        self.images = batch.noisy_images.numel()  # B or 2B

    def __call__(self, x: Tensor, t: float,
                 guided: bool) -> Tuple[Tensor, Optional[Tensor]]:
        reps = self.images // self.num
        latents = x.repeat(reps, 1, 1).flatten(0, 1)  # (reps * B * N, C)
        noisy = NoisyLatents(latents, torch.full((self.images, ), t,
                                                 device=x.device))
        v = self.model(self.batch, noisy).velocity.float()
        v = v.unflatten(0, (self.images, -1))  # (reps * B, N, C)
        return v[:self.num], (v[self.num:] if guided else None)


class _CachedVelocity:
    """Velocities of the noisy segments against a cache of the prompts.

    The prompts (every token outside a noisy-image segment) are encoded
    once at construction. A step runs the noisy segments' tokens (latents
    and their two markers, which see the latents) of every sample when
    guided, or of the conditional samples only otherwise.
    """

    def __init__(self, model: nn.Module, batch: PackedBatch, num: int):
        self.model, self.batch, self.num = model, batch, num
        seg = batch.segment_ids
        self.noisy = torch.isin(seg, seg[batch.noisy_index])  # (L,)
        self.is_text = torch.zeros_like(self.noisy)
        self.is_text[batch.text_index] = True
        self.prefix = torch.nonzero(~self.noisy).flatten()  # (L_p,)
        # embed the whole sequence once (noisy rows get placeholders) and
        # keep the condition's rows: text, clean latents, ViT tokens
        placeholder = NoisyLatents(
            model.vae2llm.weight.new_zeros(batch.noisy_index.numel(),
                                           model.latent_encoder.latent_dim),
            torch.ones(batch.noisy_images.numel(), device=batch.device))
        x = model.embed(batch, placeholder)[self.prefix]  # (L_p, D)
        _, self.cache = prefill(model, batch, x, self.prefix)
        self.parts = {}

    def _part(self, guided: bool) -> tuple:
        """Queries, latent rows, marker embeddings, latent positions and
        mask of one step (built once per mode)."""
        if guided not in self.parts:
            batch, model = self.batch, self.model
            cond = batch.sample_ids < self.num
            query = torch.nonzero(self.noisy & (cond | guided)).flatten()
            keys = torch.cat([self.prefix, query])  # cache first, then new
            per_image = (batch.noisy_index.numel() //
                         batch.noisy_images.numel())
            count = (2 if guided else 1) * self.num * per_image
            rows = rank_in(query, batch.noisy_index[:count])  # (N_q,)
            text = torch.nonzero(self.is_text[query]).flatten()
            base = model.embed_tokens.weight.new_zeros(
                query.numel(), model.embed_tokens.weight.shape[1])
            base[text] = model.embed_tokens(batch.input_ids[query[text]])
            self.parts[guided] = (query, rows, base,
                                  batch.noisy_pos[:count],
                                  model.attention.prepare(
                                      batch, query, keys))
        return self.parts[guided]

    def __call__(self, x: Tensor, t: float,
                 guided: bool) -> Tuple[Tensor, Optional[Tensor]]:
        model = self.model
        query, rows, base, pos, mask = self._part(guided)
        reps = 2 if guided else 1
        latents = x.repeat(reps, 1, 1).flatten(0, 1)  # (reps * B * N, C)
        t_tok = torch.full((latents.shape[0], ), t, device=x.device)
        group = torch.arange(latents.shape[0], device=x.device) // x.shape[1]
        emb = put_rows(base, rows, model.latent_inputs(
            latents, t_tok, pos, group))  # (L_q, D)
        hidden = run_decoder(model, self.batch, emb, query, mask,
                             past=self.cache)
        v = model.llm2vae(hidden[rows]).float()
        v = v.unflatten(0, (reps * self.num, -1))  # (reps * B, N, C)
        return v[:self.num], (v[self.num:] if guided else None)


class FlowSampler:
    """Euler sampler with batched classifier-free guidance.

    Args:
        num_steps (int): Euler steps (model calls). Defaults to 25.
        shift (float): Timestep shift ``s`` (BAGEL inference: 3.0).
            Defaults to 3.0.
        cfg_scale (float): Text guidance scale; 1.0 disables guidance and
            packs no unconditional samples. Defaults to 4.0.
        cfg_interval (tuple[float, float]): Guidance applies at ``t`` with
            ``lo < t <= hi``. Defaults to ``(0.0, 1.0)``.
        use_kv_cache (bool): Encode the prompts once and run only the
            noisy tokens at each step; False re-runs the whole packed
            sequence (same result, slower). Defaults to True.
    """

    def __init__(self,
                 num_steps: int = 25,
                 shift: float = 3.0,
                 cfg_scale: float = 4.0,
                 cfg_interval: Tuple[float, float] = (0.0, 1.0),
                 use_kv_cache: bool = True):
        if num_steps < 1:
            raise ValueError(f'num_steps must be >= 1, got {num_steps}')
        if shift <= 0:
            raise ValueError(f'shift must be > 0, got {shift}')
        self.num_steps, self.shift = num_steps, shift
        self.cfg_scale = cfg_scale
        self.cfg_interval = tuple(cfg_interval)
        self.use_kv_cache = use_kv_cache

    def timesteps(self) -> Tensor:
        """The shifted grid ``(num_steps + 1,)`` from 1 down to 0."""
        t = torch.linspace(1.0, 0.0, self.num_steps + 1)
        return shift_timesteps(t, self.shift)  # the training shift

    def guided_at(self, t: float) -> bool:
        """Whether guidance applies at timestep ``t``."""
        lo, hi = self.cfg_interval
        return self.cfg_scale != 1.0 and lo < t <= hi

    @torch.no_grad()
    def sample(self,
               model: nn.Module,
               prompts: List[List[int]],
               tokenizer,
               image_size: int,
               generator: Optional[torch.Generator] = None) -> Tensor:
        """Generate one image per prompt.

        Args:
            model (nn.Module): A :class:`UnoModel`.
            prompts (list[list[int]]): Prompt token ids without specials.
            tokenizer: Provides ``bos_id``, ``eos_id``,
                ``vision_start_id`` and ``vision_end_id``.
            image_size (int): Square image side in pixels (a multiple of
                the latent encoder's stride).
            generator (torch.Generator, optional): Source of the initial
                noise. Defaults to None.

        Returns:
            Tensor: Images ``(B, 3, H, W)`` in ``[-1, 1]``.
        """
        if not prompts:
            raise ValueError('sample() needs at least one prompt')
        uncond = [[]] * len(prompts) if self.cfg_scale != 1.0 else None
        return self.sample_plans(
            model, t2i_plans(prompts, tokenizer, image_size),
            None if uncond is None else t2i_plans(uncond, tokenizer,
                                                  image_size),
            generator=generator)

    @torch.no_grad()
    def sample_plans(self,
                     model: nn.Module,
                     plans: Sequence[SequencePlan],
                     uncond_plans: Optional[Sequence[SequencePlan]] = None,
                     generator: Optional[torch.Generator] = None) -> Tensor:
        """Generate the noisy image of each plan (any task: T2I, editing).

        Args:
            model (nn.Module): A :class:`UnoModel`.
            plans (Sequence[SequencePlan]): Conditional plans, each ending
                with its one noisy-image segment (whose image is only a
                placeholder of the output size).
            uncond_plans (Sequence[SequencePlan], optional): The same plans
                with the text condition dropped, for guidance; required
                when ``cfg_scale != 1``. Defaults to None.
            generator (torch.Generator, optional): Source of the initial
                noise. Defaults to None.

        Returns:
            Tensor: Images ``(B, 3, H, W)`` in ``[-1, 1]``.
        """
        encoder = model.latent_encoder
        sizes = {tuple(_noisy_image(p).shape[-2:]) for p in plans}
        if len(sizes) != 1:
            raise ValueError(f'plans of one call need one output size, got '
                             f'{sorted(sizes)}')
        (height, width), = sizes
        if height % encoder.stride or width % encoder.stride:
            raise ValueError(f'output size {height}x{width} is not a '
                             f'multiple of the latent stride '
                             f'{encoder.stride}')
        guided_ever = self.cfg_scale != 1.0
        if guided_ever and (uncond_plans is None
                            or len(uncond_plans) != len(plans)):
            raise ValueError('cfg_scale != 1 needs one unconditional plan '
                             'per plan')
        device, _ = model_device_dtype(model)
        num = len(plans)
        grid = (height // encoder.stride, width // encoder.stride)
        packed = list(plans) + (list(uncond_plans) if guided_ever else [])
        batch = pack_sequences(packed, latent_stride=encoder.stride,
                               vit_stride=getattr(model.und_encoder,
                                                  'stride', 0)).to(device)
        x = torch.randn((num, grid[0] * grid[1], encoder.latent_dim),
                        generator=generator,
                        device=generator.device if generator else device)
        x = x.to(device)  # (B, N, C), integrated in fp32
        velocity = (_CachedVelocity if self.use_kv_cache else
                    _FullVelocity)(model, batch, num)
        ts = self.timesteps().tolist()
        for t, t_next in zip(ts[:-1], ts[1:]):
            guided = self.guided_at(t)
            v_c, v_u = velocity(x, t, guided)  # (B, N, C) each
            v = v_u + self.cfg_scale * (v_c - v_u) if guided else v_c
            x = x - v * (t - t_next)
        return encoder.decode(x, grid).clamp(-1, 1)
