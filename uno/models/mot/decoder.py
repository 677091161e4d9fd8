"""Mixture-of-Transformers decoder: two experts, one shared attention.

Every layer holds two parameter sets in ``experts = ModuleDict({'und',
'gen'})``: the understanding expert processes text, ViT and metaquery
tokens, the generation expert processes latent tokens. Tokens are routed by
the packed batch's index tensors (never by Python loops over samples); each
expert projects its own tokens to q/k/v, and one attention runs over the
whole packed sequence, so every token can read the tokens its mask allows,
whichever expert produced them. That shared attention is the path through
which UNO's understanding losses reach the generation expert.

Parameter names therefore carry the expert: ``layers.3.experts.gen.q_proj
.weight``. Freezing, parameter groups, copy-init and FSDP wrapping key off
that contract.

For inference the decoder keeps a :class:`KVCache`: every layer's post-RoPE
keys and values of a prefix (a condition), so later tokens attend to the
prefix without recomputing it. That is exact whenever the prefix cannot
see the later tokens, which the plans guarantee for a prompt before a
noisy image (noise segments are invisible to earlier segments) and for
causal text.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .config import MoTConfig
from .layers import RMSNorm, RotaryEmbedding, SwiGLU, apply_rotary

EXPERTS = ('und', 'gen')
# (expert name, positions routed to it); experts with no tokens are absent
Routes = List[Tuple[str, Tensor]]


class ExpertBlock(nn.Module):
    """One expert's weights in one decoder layer (Qwen2 naming)."""

    def __init__(self, cfg: MoTConfig):
        super().__init__()
        d, h, kv = cfg.head_dim, cfg.num_heads, cfg.num_kv_heads
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.q_proj = nn.Linear(cfg.hidden_size, h * d, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(cfg.hidden_size, kv * d, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(cfg.hidden_size, kv * d, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(h * d, cfg.hidden_size, bias=False)
        if cfg.qk_norm:
            self.q_norm = RMSNorm(d, cfg.rms_norm_eps)
            self.k_norm = RMSNorm(d, cfg.rms_norm_eps)
        else:
            self.q_norm = self.k_norm = None
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size,
                                                cfg.rms_norm_eps)
        self.mlp = SwiGLU(cfg.hidden_size, cfg.intermediate_size)


def put_rows(x: Tensor, index: Tensor, rows: Tensor) -> Tensor:
    """``x`` ``(L, ...)`` with ``rows`` ``(N, ...)`` at ``index`` ``(N,)``,
    in ``x``'s dtype: under CUDA autocast a Linear's rows are bf16 while
    the stream stays in the weights' fp32, and CUDA's ``index_copy``
    refuses mixed dtypes (CPU autocast promotes them)."""
    return x.index_copy(0, index, rows.to(x.dtype))


def _scatter(parts: Sequence[Tuple[Tensor, Tensor]], length: int) -> Tensor:
    """Assemble rows ``(index, values)`` from every expert into ``(L, ...)``.

    With a single expert covering the whole sequence the values are
    returned as they are (no copy).
    """
    if len(parts) == 1 and parts[0][0].numel() == length:
        return parts[0][1]
    first = parts[0][1]
    out = first.new_empty((length, ) + tuple(first.shape[1:]))
    for index, values in parts:
        out = put_rows(out, index, values)
    return out


def _gather(x: Tensor, index: Tensor) -> Tensor:
    return x if index.numel() == x.shape[0] else x.index_select(0, index)


@dataclass
class KVCache:
    """Post-RoPE keys and values of a prefix, one entry per layer.

    A cache is filled by passing an empty one as ``cache`` to
    :meth:`MoTDecoder.forward` (each layer appends the keys and values it
    attended over: the ``past`` ones followed by the new ones) and read by
    passing it as ``past``; reading never modifies it, so one condition
    cache serves every sampling step.

    Attributes:
        keys (list[Tensor]): Per layer ``(L_past, H_kv, d)``.
        values (list[Tensor]): Per layer ``(L_past, H_kv, d)``.
    """
    keys: List[Tensor] = field(default_factory=list)
    values: List[Tensor] = field(default_factory=list)

    def __len__(self) -> int:
        """Number of cached tokens (0 when empty)."""
        return int(self.keys[0].shape[0]) if self.keys else 0

    @property
    def num_layers(self) -> int:
        return len(self.keys)

    def append(self, k: Tensor, v: Tensor) -> None:
        """Store the next layer's keys and values."""
        self.keys.append(k)
        self.values.append(v)


class MoTDecoderLayer(nn.Module):
    """A pre-norm decoder layer with per-expert weights.

    Args:
        cfg (MoTConfig): Decoder hyper-parameters.
    """

    def __init__(self, cfg: MoTConfig):
        super().__init__()
        self.cfg = cfg
        self.experts = nn.ModuleDict({e: ExpertBlock(cfg) for e in EXPERTS})

    def forward(self,
                x: Tensor,
                routes: Routes,
                rope: Tuple[Tensor, Tensor],
                attention: nn.Module,
                mask,
                past: Optional[Tuple[Tensor, Tensor]] = None,
                cache: Optional[KVCache] = None) -> Tensor:
        """Run the layer.

        Args:
            x (Tensor): Hidden states ``(L, D)``.
            routes (Routes): Positions of each expert's tokens.
            rope (tuple[Tensor, Tensor]): ``(cos, sin)``, each ``(L, d)``.
            attention (nn.Module): The attention backend.
            mask: The backend's prepared mask, ``(L, L_past + L)``.
            past (tuple[Tensor, Tensor], optional): Cached post-RoPE keys
                and values ``(L_past, H_kv, d)`` placed before this call's
                own. Defaults to None.
            cache (KVCache, optional): Receives the keys and values this
                layer attended over. Defaults to None.

        Returns:
            Tensor: ``(L, D)``.
        """
        cfg, length = self.cfg, x.shape[0]
        q_parts, k_parts, v_parts = [], [], []
        for name, index in routes:
            e = self.experts[name]
            h = e.input_layernorm(_gather(x, index))  # (N_e, D)
            q = e.q_proj(h).unflatten(-1, (cfg.num_heads, cfg.head_dim))
            k = e.k_proj(h).unflatten(-1, (cfg.num_kv_heads, cfg.head_dim))
            v = e.v_proj(h).unflatten(-1, (cfg.num_kv_heads, cfg.head_dim))
            if e.q_norm is not None:
                q, k = e.q_norm(q), e.k_norm(k)
            q_parts.append((index, q))
            k_parts.append((index, k))
            v_parts.append((index, v))
        q = _scatter(q_parts, length)  # (L, H, d)
        k = _scatter(k_parts, length)  # (L, H_kv, d)
        v = _scatter(v_parts, length)  # (L, H_kv, d)
        cos, sin = rope
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if past is not None:
            k = torch.cat([past[0], k])  # (L_past + L, H_kv, d)
            v = torch.cat([past[1], v])  # (L_past + L, H_kv, d)
        if cache is not None:
            cache.append(k, v)
        attn = attention(q, k, v, mask).flatten(1)  # (L, H * d)

        out_parts = []
        for name, index in routes:
            e = self.experts[name]
            h = _gather(x, index) + e.o_proj(_gather(attn, index))
            h = h + e.mlp(e.post_attention_layernorm(h))  # (N_e, D)
            out_parts.append((index, h))
        return _scatter(out_parts, length)  # (L, D)


class MoTDecoder(nn.Module):
    """Stack of :class:`MoTDecoderLayer` with per-expert final norms.

    Args:
        cfg (MoTConfig): Decoder hyper-parameters.
    """

    def __init__(self, cfg: MoTConfig):
        super().__init__()
        self.cfg = cfg
        self.layers = nn.ModuleList(
            MoTDecoderLayer(cfg) for _ in range(cfg.num_layers))
        self.norm = nn.ModuleDict(
            {e: RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
             for e in EXPERTS})
        self.rotary = RotaryEmbedding(cfg.head_dim, cfg.rope_theta)

    def forward(
        self,
        x: Tensor,
        position_ids: Tensor,
        routes: Routes,
        attention: nn.Module,
        mask,
        return_layers: Sequence[int] = (),
        past: Optional[KVCache] = None,
        cache: Optional[KVCache] = None
    ) -> Tuple[Tensor, Dict[int, Tensor]]:
        """Run all layers.

        With ``past``, ``x`` holds only the new tokens: they attend to the
        cached prefix followed by themselves, and ``mask`` is the
        ``(L, L_past + L)`` mask in that key order (see
        :meth:`AttentionBackend.prepare` with ``query_index`` and
        ``key_index``); ``position_ids`` and ``routes`` are those of the
        new tokens.

        Args:
            x (Tensor): Input embeddings ``(L, D)``.
            position_ids (Tensor): RoPE positions ``(L,)``.
            routes (Routes): Positions of each expert's tokens.
            attention (nn.Module): The attention backend.
            mask: The backend's prepared mask.
            return_layers (Sequence[int]): Layers (1-based: the output of
                layer ``i``) whose un-normalised hidden states to return.
            past (KVCache, optional): Keys and values of a prefix, read
                only. Defaults to None.
            cache (KVCache, optional): An empty cache that receives every
                layer's keys and values (``past`` ones, then the new ones):
                pass ``KVCache()`` to encode a condition once, or ``past``
                and a fresh ``KVCache()`` to extend it token by token.
                Defaults to None.

        Returns:
            tuple[Tensor, dict[int, Tensor]]: The final per-expert-normed
            hidden states ``(L, D)`` and the requested layer outputs.
        """
        if past is not None and past.num_layers != len(self.layers):
            raise ValueError(f'past has {past.num_layers} layers, the '
                             f'decoder {len(self.layers)}')
        if cache is not None and cache.num_layers:
            raise ValueError('cache must be an empty KVCache(); pass the '
                             'filled one as past')
        rope = self.rotary(position_ids, x.dtype)
        taps: Dict[int, Tensor] = {}
        # the cache is an inference feature; a checkpointed layer would
        # append its keys twice when it is recomputed in backward
        ckpt = (self.cfg.activation_checkpointing and self.training
                and past is None and cache is None)
        for i, layer in enumerate(self.layers, start=1):
            if ckpt:
                x = checkpoint(
                    layer, x, routes, rope, attention, mask,
                    use_reentrant=False)
            else:
                kv = None if past is None else (past.keys[i - 1],
                                                past.values[i - 1])
                x = layer(x, routes, rope, attention, mask, kv, cache)
            if i in return_layers:
                taps[i] = x
        x = _scatter([(index, self.norm[name](_gather(x, index)))
                      for name, index in routes], x.shape[0])
        return x, taps

    def copy_und_to_gen(self) -> None:
        """Copy-initialise every gen-expert weight from its und twin
        (BAGEL's recipe for a generation expert started from an LLM)."""
        with torch.no_grad():
            for layer in self.layers:
                layer.experts['gen'].load_state_dict(
                    layer.experts['und'].state_dict())
            self.norm['gen'].load_state_dict(self.norm['und'].state_dict())


def make_routes(und_index: Tensor, gen_index: Tensor) -> Routes:
    """Routes for the experts that have tokens."""
    return [(n, i) for n, i in (('und', und_index), ('gen', gen_index))
            if i.numel() > 0]


__all__ = ['MoTDecoder', 'MoTDecoderLayer', 'ExpertBlock', 'KVCache',
           'make_routes', 'EXPERTS', 'Routes', 'MoTConfig']
