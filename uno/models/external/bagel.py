"""Checkpoint names of BAGEL-7B-MoT mapped onto :class:`UnoModel`.

The names follow ByteDance-Seed/Bagel (``modeling/bagel/bagel.py``,
``qwen2_navit.py``, ``modeling_utils.py``, ``siglip_navit.py``; Apache-2.0),
read at commit 056b5fd. BAGEL marks the generation expert with a
``_moe_gen`` suffix on the duplicated module; uno puts both experts in
``experts.{und,gen}``::

    language_model.model.layers.N.self_attn.q_proj_moe_gen.weight
        -> decoder.layers.N.experts.gen.q_proj.weight
    language_model.model.layers.N.mlp_moe_gen.up_proj.weight
        -> decoder.layers.N.experts.gen.mlp.up_proj.weight
    language_model.model.norm_moe_gen.weight -> decoder.norm.gen.weight
    language_model.lm_head.weight            -> lm_head.weight
    connector.fc1.* / connector.fc2.*        -> connector.0.* / connector.2.*
    vit_model.vision_model.X                 -> und_encoder.model
                                                .vision_model.X

``time_embedder.mlp.{0,2}``, ``vae2llm`` and ``llm2vae`` keep their names.
The fixed sin-cos tables ``latent_pos_embed.pos_embed`` and
``vit_pos_embed.pos_embed`` are recomputed by uno and skipped as derived.
BAGEL stores the SigLIP patch embedding as a Linear whose input is a patch
flattened channels-last, ``(out, p * p * C)``; transformers' SigLIP has a
Conv2d ``(out, C, p, p)``, so that one tensor is reshaped both ways.
The FLUX VAE is a separate file (``ae.safetensors``) that the latent
encoder loads itself.
"""
import glob
import math
import os.path as osp
import time
from typing import Dict, Iterable, List, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from uno.errors import UnoConfigError
from ..embeddings import sincos_2d
from ..encoders.siglip import linear_to_conv_patch_weight
from .hf_keys import hf_key_to_uno, uno_key_to_hf
from .pretrained import LoadReport, assign

#: BAGEL keys uno recomputes instead of loading
DERIVED = ('latent_pos_embed.pos_embed', 'vit_pos_embed.pos_embed')
_LLM = 'language_model.'
_VIT, _UNO_VIT = 'vit_model.', 'und_encoder.model.'
_PATCH = 'vision_model.embeddings.patch_embedding.weight'
_SAME = ('time_embedder.', 'vae2llm.', 'llm2vae.')
# BAGEL's MLPconnector.{fc1,fc2} -> uno's Sequential(Linear, GELU, Linear)
_CONNECTOR = {'connector.fc1.': 'connector.0.',
              'connector.fc2.': 'connector.2.'}
_MOE = '_moe_gen'
#: marker returned by :func:`bagel_key_to_uno` for derived keys
IS_DERIVED = 'derived'


def bagel_key_to_uno(key: str) -> Optional[str]:
    """uno name of a BAGEL key; :data:`IS_DERIVED` or None if it has none.
    """
    if key in DERIVED or key.endswith('rotary_emb.inv_freq'):
        return IS_DERIVED
    if key.startswith(_LLM):
        hf = key[len(_LLM):]
        expert = 'gen' if _MOE in hf else 'und'
        return hf_key_to_uno(hf.replace(_MOE, ''), expert)
    if key.startswith(_VIT + 'vision_model.'):
        return _UNO_VIT + key[len(_VIT):]
    for old, new in _CONNECTOR.items():
        if key.startswith(old) and key[len(old):] in ('weight', 'bias'):
            return new + key[len(old):]
    if key.startswith(_SAME):
        return key
    return None


def _gen_suffix(hf: str) -> str:
    """Mark the module BAGEL duplicates: ``self_attn.q_proj`` ->
    ``self_attn.q_proj_moe_gen``, ``mlp`` -> ``mlp_moe_gen``, ``norm`` ->
    ``norm_moe_gen``."""
    parts = hf.split('.')
    if parts[1] == 'norm':  # model.norm.weight
        parts[1] += _MOE
    elif parts[3] == 'self_attn':  # model.layers.N.self_attn.q_proj.weight
        parts[4] += _MOE
    else:  # model.layers.N.{mlp,input_layernorm,...}.X
        parts[3] += _MOE
    return '.'.join(parts)


def uno_key_to_bagel(key: str) -> Optional[str]:
    """BAGEL name of a uno key, or None for uno-only parameters."""
    for expert in ('und', 'gen'):
        hf = uno_key_to_hf(key, expert)
        if hf is not None:  # und first: embeddings and lm_head are shared
            return _LLM + (_gen_suffix(hf) if expert == 'gen' else hf)
    if key.startswith(_UNO_VIT + 'vision_model.'):
        return _VIT + key[len(_UNO_VIT):]
    for old, new in _CONNECTOR.items():
        if key.startswith(new):
            return old + key[len(new):]
    if key.startswith(_SAME):
        return key
    return None


def linear_to_conv_patch(w: Tensor, channels: int = 3) -> Tensor:
    """BAGEL's ``(out, p * p * C)`` patch Linear -> ``(out, C, p, p)``."""
    p = math.isqrt(w.shape[1] // channels)
    return linear_to_conv_patch_weight(w, p, channels)


def conv_to_linear_patch(w: Tensor) -> Tensor:
    """``(out, C, p, p)`` patch Conv2d -> BAGEL's ``(out, p * p * C)``."""
    return w.permute(0, 2, 3, 1).reshape(w.shape[0], -1)


def _map(items, key_fn, patch_fn, src_patch):
    """Rename the keys of ``items`` (a state dict, or any iterable of
    names) with ``key_fn``; tensors under ``src_patch`` keys go through
    ``patch_fn``."""
    mapped, unexpected = {}, []
    for key in items:
        new = key_fn(key)
        if new == IS_DERIVED:
            continue
        if new is None:
            unexpected.append(key)
        elif isinstance(items, Mapping):
            value = items[key]
            if key.endswith(src_patch) and value.dim() in (2, 4):
                value = patch_fn(value)
            mapped[new] = value
        else:
            mapped[new] = key
    return mapped, unexpected


def bagel_to_uno(
        state_dict_or_keys: Union[Mapping[str, Tensor], Iterable[str]]
) -> Tuple[Dict, List[str]]:
    """Rename a BAGEL state dict (or key list) to uno names.

    Args:
        state_dict_or_keys (Mapping | Iterable[str]): BAGEL tensors, or
            only their names.

    Returns:
        tuple[dict, list[str]]: ``mapped`` (``{uno_key: tensor}``, with the
        patch embedding reshaped to a Conv2d weight; or ``{uno_key:
        bagel_key}`` for a key list) and the BAGEL keys with no uno name.
        Derived keys (:data:`DERIVED`) are in neither.
    """
    def to_conv(w):
        return w if w.dim() == 4 else linear_to_conv_patch(w)

    return _map(state_dict_or_keys, bagel_key_to_uno, to_conv,
                _VIT + _PATCH)


def uno_to_bagel(
        state_dict_or_keys: Union[Mapping[str, Tensor], Iterable[str]]
) -> Tuple[Dict, List[str]]:
    """Rename a uno state dict (or key list) to BAGEL names.

    Returns:
        tuple[dict, list[str]]: ``mapped`` (BAGEL names; the patch
        embedding as BAGEL's Linear) and the uno keys BAGEL has no slot
        for (metaqueries, the latent encoder, ...). The derived sin-cos
        tables are not produced.
    """
    def to_linear(w):
        return w if w.dim() == 2 else conv_to_linear_patch(w)

    return _map(state_dict_or_keys, uno_key_to_bagel, to_linear,
                _UNO_VIT + _PATCH)


def bagel_files(path: str) -> List[str]:
    """Safetensors files of a BAGEL checkpoint file or folder.

    A folder is read through ``*.safetensors.index.json`` if it has one,
    else ``ema.safetensors`` (the released weights), else
    ``model.safetensors``; ``ae.safetensors`` (the VAE) is never read.
    """
    if osp.isfile(path):
        return [path]
    if not osp.isdir(path):
        raise FileNotFoundError(f'no BAGEL checkpoint at {path}')
    indexes = sorted(glob.glob(osp.join(path, '*.safetensors.index.json')))
    if indexes:
        import json
        with open(indexes[0]) as f:
            shards = sorted(set(json.load(f)['weight_map'].values()))
        return [osp.join(path, s) for s in shards]
    for name in ('ema.safetensors', 'model.safetensors'):
        if osp.isfile(osp.join(path, name)):
            return [osp.join(path, name)]
    found = [osp.basename(f) for f in glob.glob(osp.join(path, '*'))]
    raise FileNotFoundError(
        f'{path} has no ema.safetensors, model.safetensors or shard index; '
        f'found {sorted(found)[:10]}')


def check_pos_table(table: Tensor) -> float:
    """Max abs difference between a BAGEL sin-cos table and uno's.

    BAGEL's ``PositionEmbedding`` row ``r * S + c`` holds the embedding
    of patch (row ``r``, column ``c``) of an ``S x S`` grid; uno computes
    :func:`sincos_2d` of ``(r, c)`` on the fly.
    """
    n, dim = table.shape
    side = math.isqrt(n)
    idx = torch.arange(n)
    pos = torch.stack([idx // side, idx % side], dim=1)  # (n, 2)
    return (sincos_2d(pos, dim) - table.float()).abs().max().item()


def _slice_shape(f, key) -> tuple:
    return tuple(f.get_slice(key).get_shape())


@torch.no_grad()
def load_bagel_checkpoint(model: nn.Module,
                          path: str,
                          strict: bool = False) -> LoadReport:
    """Load BAGEL weights (e.g. ``ema.safetensors``) into ``model``.

    Every key is checked (names and shapes, from the safetensors headers)
    before any tensor is read; tensors are then streamed one at a time.

    Args:
        model (UnoModel): A model built with BAGEL's shapes
            (``configs/_base_/models/bagel-7b-mot.py``).
        path (str): A safetensors file or a folder (see
            :func:`bagel_files`).
        strict (bool): Raise, before loading anything, if a key is
            missing, unexpected or of another shape. Defaults to False.

    Returns:
        LoadReport: Loaded, missing, unexpected, shape-mismatched and
        derived keys; notes on the sin-cos tables.
    """
    from safetensors import safe_open
    start = time.perf_counter()
    files = bagel_files(path)
    report = LoadReport(source=path)
    target = model.state_dict()
    plan = {}  # bagel key -> uno key
    tables = []
    for file in files:
        with safe_open(file, framework='pt') as f:
            for key in f.keys():
                new = bagel_key_to_uno(key)
                if new == IS_DERIVED:
                    report.derived.append(key)
                    if key in DERIVED:
                        tables.append((file, key))
                    continue
                if new is None or new not in target:
                    report.unexpected.append(key)
                    continue
                shape, want = _slice_shape(f, key), tuple(target[new].shape)
                if (key.endswith(_PATCH) and len(shape) == 2
                        and len(want) == 4
                        and math.prod(shape) == math.prod(want)):
                    shape = want  # reshaped at load time
                if shape != want:
                    report.mismatched.append((new, want, shape))
                    continue
                plan[key] = new
    done = set(plan.values())
    tied = getattr(getattr(model, 'cfg', None), 'tie_word_embeddings', 0)
    if tied and 'embed_tokens.weight' in done:
        done.add('lm_head.weight')
    report.missing = [
        k for k, v in target.items()
        if k not in done and v.numel() and not k.startswith('latent_encoder.')
    ]
    if any(k.startswith('latent_encoder.') for k in target):
        report.notes.append('latent_encoder.* is not in a BAGEL checkpoint '
                            '(the VAE is ae.safetensors): not loaded')
    if strict and not report.ok:
        raise UnoConfigError(f'BAGEL checkpoint does not fit the model:\n'
                             f'{report}')
    for file in files:
        with safe_open(file, framework='pt') as f:
            for key in f.keys():
                if key in plan:
                    value = f.get_tensor(key)
                    if value.dim() == 2 and target[plan[key]].dim() == 4:
                        value = linear_to_conv_patch(
                            value, target[plan[key]].shape[1])
                    assign(target, plan[key], value, report, key)
            for tfile, key in tables:
                if tfile == file:
                    err = check_pos_table(f.get_tensor(key))
                    verdict = ('matches uno' if err < 1e-4 else
                               'DIFFERS from uno')
                    report.notes.append(
                        f"{key}: derived; {verdict}'s sincos_2d (max "
                        f'|diff| {err:.2g})')
    report.seconds = time.perf_counter() - start
    return report


__all__ = ['bagel_to_uno', 'uno_to_bagel', 'bagel_key_to_uno',
           'uno_key_to_bagel', 'load_bagel_checkpoint', 'bagel_files',
           'linear_to_conv_patch', 'conv_to_linear_patch', 'check_pos_table',
           'DERIVED', 'IS_DERIVED']
