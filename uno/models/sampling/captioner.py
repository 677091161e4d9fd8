"""Captioning: autoregressive text from the understanding expert.

Each image is laid out with the training plan :func:`caption_plan`
(``<vision_start> image tokens <vision_end>``, an optional ``<bos> prompt
<eos>``, then the caption ``<bos> w1 w2 ...``), shown either as
understanding-encoder tokens (``mode='vit'``) or as clean latents
(``mode='latent'``, read by the generation expert). The first forward
encodes every image, prompt and ``<bos>`` and keeps the decoder's
:class:`KVCache`; each further step runs one token per unfinished caption
against it. Generation stops at ``<eos>`` or after ``max_new_tokens``.
"""
from functools import partial
from typing import Callable, List, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from uno.structures.packing import pack_sequences
from uno.structures.plans import caption_plan
from uno.models.mot.decoder import KVCache
from uno.structures import NoisyLatents, PackedBatch, SequencePlan
from .packed_cache import model_device_dtype, prefill

MODES = ('vit', 'latent')
Prompt = Optional[Union[Sequence[int], Sequence[Sequence[int]]]]


def _vit_stride(model: nn.Module) -> int:
    encoder = model.und_encoder
    if encoder is None:
        raise RuntimeError("mode='vit' needs a model with an und_encoder; "
                           "use mode='latent' or set model.und_encoder")
    stride = getattr(encoder, 'stride', None) or getattr(
        encoder, 'patch_size', None)
    if not stride:
        raise RuntimeError('the und_encoder exposes neither stride nor '
                           'patch_size (pixels per token side)')
    return int(stride)


class Captioner:
    """Greedy or sampled captioning with a KV cache, batched over images.

    Args:
        max_new_tokens (int): Most tokens generated per caption (the
            ``<eos>`` included). Defaults to 32.
        temperature (float): 0 for greedy decoding, else the softmax
            temperature of sampling. Defaults to 0.0.
        top_k (int, optional): Sample among the ``k`` most likely tokens
            only. Defaults to None (all).
        use_kv_cache (bool): False re-runs the whole packed sequence for
            every token (same result, slower; a reference). Defaults to
            True.
    """

    def __init__(self,
                 max_new_tokens: int = 32,
                 temperature: float = 0.0,
                 top_k: Optional[int] = None,
                 use_kv_cache: bool = True):
        if max_new_tokens < 1:
            raise ValueError('max_new_tokens must be >= 1')
        if temperature < 0:
            raise ValueError('temperature must be >= 0')
        if top_k is not None and (isinstance(top_k, bool) or
                                  not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f'top_k must be an integer >= 1 or None, got '
                             f'{top_k!r}')
        self.max_new_tokens = max_new_tokens
        self.temperature, self.top_k = temperature, top_k
        self.use_kv_cache = use_kv_cache

    def next_tokens(self, logits: Tensor,
                    generator: Optional[torch.Generator] = None) -> Tensor:
        """Pick one token per row of ``logits`` ``(B, V)`` -> ``(B,)``."""
        if self.temperature == 0:
            return logits.argmax(-1)
        logits = logits.float() / self.temperature
        if self.top_k is not None:
            kth = logits.topk(min(self.top_k, logits.shape[-1]), -1).values
            logits = logits.masked_fill(logits < kth[:, -1:], float('-inf'))
        probs = logits.softmax(-1)
        if generator is not None and generator.device != probs.device:
            probs = probs.to(generator.device)
        picked = torch.multinomial(probs, 1, generator=generator)
        return picked.squeeze(-1).to(logits.device)

    @staticmethod
    def _batch(images: Tensor, tokenizer, prompts: List,
               captions: List[List[int]], latent: bool, vit_stride: int,
               latent_stride: int) -> PackedBatch:
        """Pack ``[image, (prompt), <bos> caption-so-far]`` per image."""
        plans = []
        for image, prompt, caption in zip(images, prompts, captions):
            segments = caption_plan(caption, tokenizer, prompt=prompt,
                                    latent=latent)
            last = segments[-1]
            assert last.kind == 'caption' and (
                last.tokens[-1] == tokenizer.eos_id), 'unexpected plan'
            last.tokens, last.loss = last.tokens[:-1], False  # open caption
            plans.append(SequencePlan(segments, images=[image.cpu()]))
        return pack_sequences(plans, latent_stride=latent_stride,
                              vit_stride=vit_stride)

    @torch.no_grad()
    def caption(self,
                model: nn.Module,
                images: Tensor,
                tokenizer,
                prompt_tokens: Prompt = None,
                mode: str = 'vit',
                generator: Optional[torch.Generator] = None
                ) -> List[List[int]]:
        """Caption every image.

        Args:
            model (nn.Module): A :class:`UnoModel`.
            images (Tensor): ``(B, 3, H, W)`` in ``[-1, 1]``.
            tokenizer: Provides the special ids.
            prompt_tokens (list[int] | list[list[int]], optional): A prompt
                (ids without specials) shown after every image, or one per
                image. Defaults to None (no prompt).
            mode (str): ``'vit'`` (understanding encoder) or ``'latent'``
                (clean latents). Defaults to ``'vit'``.
            generator (torch.Generator, optional): For sampling. Defaults
                to None.

        Returns:
            list[list[int]]: Generated ids per image, without ``<bos>``
            and ``<eos>``.
        """
        if mode not in MODES:
            raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
        num = images.shape[0]
        if prompt_tokens and isinstance(prompt_tokens[0], (list, tuple)):
            prompts = [list(p) for p in prompt_tokens]
        else:
            prompts = [prompt_tokens] * num
        pack = partial(self._batch, images, tokenizer, prompts,
                       latent=mode == 'latent',
                       vit_stride=_vit_stride(model) if mode == 'vit' else 0,
                       latent_stride=model.latent_encoder.stride)
        run = self._cached if self.use_kv_cache else self._uncached
        return run(model, pack, num, tokenizer.eos_id, generator)

    def _uncached(self, model: nn.Module, pack: Callable, num: int,
                  eos: int, generator,
                  noisy: Optional[NoisyLatents] = None) -> List[List[int]]:
        """Reference decoding: a full forward per generated token.

        ``noisy`` are the noisy latents of plans that caption noisy
        images (their tokens do not change while the captions grow)."""
        device, _ = model_device_dtype(model)
        captions: List[List[int]] = [[] for _ in range(num)]
        active = list(range(num))
        for _ in range(self.max_new_tokens):
            batch = pack(captions).to(device)
            last = _last_positions(batch)  # (B,)
            hidden = model(batch, noisy).hidden[last[active]]  # (B_a, D)
            tokens = self.next_tokens(model.lm_head(hidden), generator)
            active = _append(captions, active, tokens.tolist(), eos)
            if not active:
                break
        return _strip(captions, eos)

    def _cached(self, model: nn.Module, pack: Callable, num: int, eos: int,
                generator,
                noisy: Optional[NoisyLatents] = None) -> List[List[int]]:
        """One full forward, then one token per open caption per step
        (``noisy`` as in :meth:`_uncached`)."""
        device, _ = model_device_dtype(model)
        captions: List[List[int]] = [[] for _ in range(num)]
        batch = pack(captions).to(device)
        hidden, cache = prefill(model, batch, model.embed(batch, noisy),
                                torch.arange(batch.num_tokens,
                                             device=device))
        last = _last_positions(batch)  # (B,)
        cap_seg = batch.segment_ids[last]  # (B,) caption segments
        next_pos = batch.position_ids[last] + 1  # (B,)
        key_seg = batch.segment_ids  # (L_past,) segment of every key
        visible = batch.segment_visible  # (S, S)
        logits = model.lm_head(hidden[last])  # (B, V)
        active = list(range(num))
        for step in range(self.max_new_tokens):
            tokens = self.next_tokens(logits, generator)  # (B_a,)
            keep = _append(captions, active, tokens.tolist(), eos)
            rows = [active.index(b) for b in keep]
            active = keep
            if not active or step + 1 == self.max_new_tokens:
                break
            idx = torch.as_tensor(active, device=device)
            ids = tokens[torch.as_tensor(rows, device=device)]  # (B_a,)
            seg = cap_seg[idx]  # (B_a,)
            # a new token sees what its caption segment sees (its image,
            # prompt and every earlier caption token: all cached) and
            # itself; new tokens of other samples are invisible
            mask = torch.cat([visible[seg][:, key_seg],
                              torch.eye(len(active), dtype=torch.bool,
                                        device=device)], dim=1)
            new_cache = KVCache()
            hidden, _ = model.decoder(
                model.embed_tokens(ids), next_pos[idx],
                [('und', torch.arange(len(active), device=device))],
                model.attention, model.attention.prepare_dense(mask),
                past=cache, cache=new_cache)
            cache, key_seg = new_cache, torch.cat([key_seg, seg])
            next_pos[idx] += 1
            logits = model.lm_head(hidden)  # (B_a, V)
        return _strip(captions, eos)


def _last_positions(batch: PackedBatch) -> Tensor:
    """Last position of every sample ``(B,)`` (its open caption's end)."""
    ends = torch.zeros(batch.num_samples, dtype=torch.long,
                       device=batch.device)
    pos = torch.arange(batch.num_tokens, device=batch.device)
    return ends.scatter_reduce(0, batch.sample_ids, pos, 'amax')


def _append(captions: List[List[int]], active: List[int],
            tokens: List[int], eos: int) -> List[int]:
    """Append ``tokens`` to the active captions; return those still open."""
    for b, token in zip(active, tokens):
        captions[b].append(token)
    return [b for b in active if captions[b][-1] != eos]


def _strip(captions: List[List[int]], eos: int) -> List[List[int]]:
    return [c[:-1] if c and c[-1] == eos else c for c in captions]
