"""Model FLOPs of a training step, counted from the config and the batch.

The count is what the model needs, not what a kernel happens to execute:

* every matmul of an expert counts ``2 * tokens * in * out`` for the tokens
  routed to that expert (each token goes through one expert per layer);
* attention counts ``4 * pairs * H * d`` (``Q K^T`` and ``P V``) for the
  *visible* query-key pairs of the plan's mask, not the ``L**2`` a dense
  kernel computes;
* backward is the gradient of the inputs (the same FLOPs as forward) for
  the tokens whose hidden states depend on a trainable weight
  (:func:`grad_tokens`), plus the gradient of the weights (the same again)
  **only for trainable weights**: a frozen understanding expert costs at
  most forward + input gradient, 4 FLOPs per weight and token, not 6, and
  a frozen prompt that cannot see the noisy image costs forward only.
  Attention backward is twice its forward, for the pairs whose query needs
  a gradient.

Element-wise work (norms, RoPE, SwiGLU's product, softmax), embeddings, the
encoders and the objectives' own heads are not counted, so a utilisation
computed from this count is conservative.
"""
from dataclasses import dataclass
from typing import Dict, Mapping, Optional

import torch
from torch import Tensor


@dataclass
class FlopCount:
    """Forward and backward FLOPs.

    Attributes:
        forward (int): Forward FLOPs.
        backward (int): Backward FLOPs (input and weight gradients).
    """
    forward: int = 0
    backward: int = 0

    @property
    def total(self) -> int:
        return self.forward + self.backward

    def __add__(self, other: 'FlopCount') -> 'FlopCount':
        return FlopCount(self.forward + other.forward,
                         self.backward + other.backward)


def linear_flops(tokens: int, in_features: int, out_features: int,
                 trainable: bool, input_grad: bool = True) -> FlopCount:
    """FLOPs of ``tokens`` rows through an ``in -> out`` matmul.

    Args:
        tokens (int): Rows.
        in_features (int): Input width.
        out_features (int): Output width.
        trainable (bool): The weight gets a gradient.
        input_grad (bool): The input gets a gradient. Defaults to True.
    """
    f = 2 * tokens * in_features * out_features
    return FlopCount(f, f * int(input_grad) + f * int(trainable))


def attention_flops(pairs: int, heads: int, head_dim: int,
                    backward: bool = True) -> FlopCount:
    """FLOPs of attention over ``pairs`` visible query-key pairs."""
    f = 4 * pairs * heads * head_dim
    return FlopCount(f, 2 * f if backward else 0)


def expert_weights_per_token(cfg) -> int:
    """Matmul weights one token meets in one layer of one expert.

    Args:
        cfg (MoTConfig): Decoder hyper-parameters.

    Returns:
        int: ``q, k, v, o`` projections plus the SwiGLU's three matrices.
    """
    d, hd = cfg.hidden_size, cfg.head_dim
    attn = d * cfg.num_heads * hd * 2 + d * cfg.num_kv_heads * hd * 2
    return attn + 3 * d * cfg.intermediate_size


def decoder_flops(cfg, routed: Mapping[str, int],
                  trainable: Mapping[str, bool], pairs: int,
                  grad_routed: Optional[Mapping[str, int]] = None,
                  grad_pairs: Optional[int] = None) -> FlopCount:
    """FLOPs of a MoT decoder training step.

    Args:
        cfg (MoTConfig): Decoder hyper-parameters.
        routed (Mapping[str, int]): Tokens per expert, e.g. ``{'und': 870,
            'gen': 1280}``.
        trainable (Mapping[str, bool]): Whether each expert's weights get
            gradients.
        pairs (int): Visible query-key pairs of the mask.
        grad_routed (Mapping[str, int], optional): Tokens per expert whose
            hidden states depend on a trainable weight (they need input
            gradients); None means all. Defaults to None.
        grad_pairs (int, optional): Visible pairs whose query depends on a
            trainable weight; None means all. Defaults to None.

    Returns:
        FlopCount: Over all layers.
    """
    w = expert_weights_per_token(cfg)
    grad_routed = routed if grad_routed is None else grad_routed
    grad_pairs = pairs if grad_pairs is None else grad_pairs
    fwd = bwd = 0
    for expert, tokens in routed.items():
        fwd += 2 * tokens * w
        bwd += 2 * grad_routed[expert] * w  # input gradients
        bwd += 2 * tokens * w * int(trainable[expert])  # weight gradients
    att = attention_flops(pairs, cfg.num_heads, cfg.head_dim)
    fwd += att.forward
    bwd += attention_flops(grad_pairs, cfg.num_heads, cfg.head_dim).backward
    return FlopCount(fwd * cfg.num_layers, bwd * cfg.num_layers)


def visible_pairs(batch, queries: Optional[Tensor] = None,
                  chunk: int = 1024) -> int:
    """Query-key pairs the plan's mask lets attend.

    Computed per chunk of queries, so the ``(L, L)`` mask is never held.

    Args:
        batch (PackedBatch): The packed batch.
        queries (Tensor, optional): ``(L,)`` boolean: count only the pairs
            of these queries. Defaults to None (all).
        chunk (int): Queries per chunk. Defaults to 1024.
    """
    seg = batch.segment_ids
    pos = torch.arange(seg.numel(), device=seg.device)
    total = 0
    for start in range(0, seg.numel(), chunk):
        sq = seg[start:start + chunk, None]
        pq = pos[start:start + chunk, None]
        vis = batch.segment_visible[sq, seg[None, :]]
        inside = batch.segment_full[sq] | (pos[None, :] <= pq)
        rows = (vis & ((sq != seg[None, :]) | inside)).sum(1)
        if queries is not None:
            rows = rows * queries[start:start + chunk]
        total += int(rows.sum())
    return total


def _trainable(module) -> bool:
    return module is not None and any(p.requires_grad
                                      for p in module.parameters())


def grad_tokens(model, batch) -> Tensor:
    """``(L,)`` boolean: tokens whose hidden states depend on a trainable
    weight, hence need input gradients in backward.

    A token depends on one if its expert or its input embedding is
    trainable, or if its segment sees (or is) a segment with such a token;
    segments only see earlier ones, so this is a closure over segments.
    E.g. with the understanding side frozen, a prompt (which cannot see
    the noisy image) needs no backward at all, a UNO caption does.
    """
    layer = model.decoder.layers[0]
    seed = torch.zeros(batch.num_tokens, dtype=torch.bool,
                       device=batch.device)
    for name, index in (('und', batch.und_index), ('gen', batch.gen_index)):
        if _trainable(layer.experts[name]):
            seed[index] = True
    inputs = ((model.embed_tokens, batch.text_index),
              (model.vae2llm, batch.noisy_index),
              (model.vae2llm, batch.clean_index),
              (model.connector, batch.vit_index),
              (model.metaquery, batch.query_index))
    for module, index in inputs:
        if _trainable(module):
            seed[index] = True
    num_seg = batch.segment_full.numel()
    carry = torch.zeros(num_seg, dtype=torch.bool, device=batch.device)
    carry[batch.segment_ids[seed]] = True
    vis = batch.segment_visible
    for _ in range(num_seg):
        grown = carry | (vis & carry[None, :]).any(1)
        if bool((grown == carry).all()):
            break
        carry = grown
    return carry[batch.segment_ids]


def model_flops(model, batch) -> Dict[str, FlopCount]:
    """FLOPs of a training step of a :class:`UnoModel` on ``batch``.

    Counts the decoder (both experts, attention) and the matmuls that turn
    tokens into model inputs and outputs: ``vae2llm`` on latent tokens,
    the ViT connector on understanding tokens, ``lm_head`` on CE positions
    and ``llm2vae`` on noisy tokens. Trainability is read from
    ``requires_grad``; input gradients are counted only for the tokens of
    :func:`grad_tokens`.

    Args:
        model (UnoModel): The model (its ``cfg`` and parameters).
        batch (PackedBatch): The packed batch.

    Returns:
        dict[str, FlopCount]: ``decoder``, ``io`` and ``total``.
    """
    cfg = model.cfg
    layer = model.decoder.layers[0]
    grad = grad_tokens(model, batch)
    routes = dict(und=batch.und_index, gen=batch.gen_index)
    dec = decoder_flops(
        cfg, {e: i.numel() for e, i in routes.items()},
        {e: _trainable(layer.experts[e]) for e in routes},
        visible_pairs(batch),
        grad_routed={e: int(grad[i].sum()) for e, i in routes.items()},
        grad_pairs=visible_pairs(batch, grad))
    d, io = cfg.hidden_size, FlopCount()
    latents = batch.noisy_index.numel() + batch.clean_index.numel()
    io += linear_flops(latents, model.vae2llm.in_features, d,
                       _trainable(model.vae2llm), input_grad=False)
    if model.connector is not None and batch.vit_index.numel():
        n = batch.vit_index.numel()
        trains = _trainable(model.connector)
        io += linear_flops(n, model.connector[0].in_features, d, trains,
                           input_grad=False)
        io += linear_flops(n, d, d, trains)
    ce = batch.ce_index
    head = linear_flops(ce.numel(), d, cfg.vocab_size,
                        _trainable(model.lm_head), input_grad=False)
    io += head + FlopCount(0, 2 * int(grad[ce].sum()) * d * cfg.vocab_size)
    io += linear_flops(batch.noisy_index.numel(), d,
                       model.llm2vae.out_features, _trainable(model.llm2vae))
    return dict(decoder=dec, io=io, total=dec + io)


__all__ = ['FlopCount', 'linear_flops', 'attention_flops', 'decoder_flops',
           'expert_weights_per_token', 'visible_pairs', 'grad_tokens',
           'model_flops']
