"""Convert between transformers' dense decoders and the MoT decoder.

A ``Qwen2ForCausalLM``, ``LlamaForCausalLM`` or ``Qwen3ForCausalLM`` is one
expert of a MoT decoder: the names of its layers map one to one onto an
expert's :class:`~uno.models.mot.decoder.ExpertBlock` (uno keeps Qwen2's
names inside the expert), so conversion is a renaming, with no reshapes::

    model.embed_tokens.weight               -> embed_tokens.weight
    model.layers.3.self_attn.q_proj.weight  -> decoder.layers.3.experts.und
                                               .q_proj.weight
    model.layers.3.mlp.up_proj.weight       -> decoder.layers.3.experts.und
                                               .mlp.up_proj.weight
    model.layers.3.input_layernorm.weight   -> decoder.layers.3.experts.und
                                               .input_layernorm.weight
    model.norm.weight                       -> decoder.norm.und.weight
    lm_head.weight                          -> lm_head.weight

:func:`mot_config_from_hf` reads the matching :class:`MoTConfig` off a
transformers config and refuses what uno does not implement (scaled RoPE,
sliding windows, biases on o_proj or the MLP).
"""
import re
from typing import Dict, Optional, Sequence

from uno.errors import UnoConfigError, short_list
from ..mot.config import MoTConfig
from ..mot.decoder import EXPERTS

#: transformers ``model_type`` s whose decoder uno reproduces
SUPPORTED_MODEL_TYPES = ('qwen2', 'llama', 'qwen3')

_HF_LAYER = re.compile(r'^model\.layers\.(\d+)\.(.+)$')
_UNO_LAYER = re.compile(r'^decoder\.layers\.(\d+)\.experts\.(\w+)\.(.+)$')
_UNO_NORM = re.compile(r'^decoder\.norm\.(\w+)\.weight$')
# per-layer HF suffix -> suffix inside an ExpertBlock
_LAYER_NAMES = {
    'self_attn.q_proj.weight': 'q_proj.weight',
    'self_attn.q_proj.bias': 'q_proj.bias',
    'self_attn.k_proj.weight': 'k_proj.weight',
    'self_attn.k_proj.bias': 'k_proj.bias',
    'self_attn.v_proj.weight': 'v_proj.weight',
    'self_attn.v_proj.bias': 'v_proj.bias',
    'self_attn.o_proj.weight': 'o_proj.weight',
    'self_attn.q_norm.weight': 'q_norm.weight',
    'self_attn.k_norm.weight': 'k_norm.weight',
    'mlp.gate_proj.weight': 'mlp.gate_proj.weight',
    'mlp.up_proj.weight': 'mlp.up_proj.weight',
    'mlp.down_proj.weight': 'mlp.down_proj.weight',
    'input_layernorm.weight': 'input_layernorm.weight',
    'post_attention_layernorm.weight': 'post_attention_layernorm.weight',
}
_EXPERT_NAMES = {v: k for k, v in _LAYER_NAMES.items()}


def _rope_theta(hf_config) -> float:
    """RoPE base of ``hf_config``; only unscaled ('default') RoPE passes.

    transformers v5 keeps the base in ``rope_parameters`` (also exposed as
    ``rope_scaling``); v4 kept ``rope_theta`` on the config and a scaling
    dict (or None) in ``rope_scaling``.
    """
    params = getattr(hf_config, 'rope_parameters', None)
    if params is None:
        params = getattr(hf_config, 'rope_scaling', None)
    params = dict(params or {})
    if params and all(isinstance(v, dict) for v in params.values()):
        # per-layer-type parameters (sliding/full): uno has one RoPE
        raise UnoConfigError(
            'per-layer-type RoPE parameters are not supported: '
            f'{sorted(params)}')
    rope_type = params.get('rope_type', params.get('type', 'default'))
    if rope_type != 'default':
        raise UnoConfigError(
            f"RoPE scaling type '{rope_type}' of this "
            f'{hf_config.model_type} config is not supported: uno '
            "implements only unscaled ('default') RoPE")
    theta = params.get('rope_theta', getattr(hf_config, 'rope_theta', None))
    return float(10000.0 if theta is None else theta)


def mot_config_from_hf(hf_config) -> MoTConfig:
    """The :class:`MoTConfig` whose experts equal ``hf_config``'s decoder.

    Args:
        hf_config (PretrainedConfig): A ``Qwen2Config``, ``LlamaConfig`` or
            ``Qwen3Config`` (its q/k RMSNorm becomes ``qk_norm=True``).

    Returns:
        MoTConfig: The matching decoder configuration.

    Raises:
        UnoConfigError: For another architecture, scaled RoPE, sliding
            window attention, biases uno has no slot for (o_proj, MLP) or
            an activation other than SiLU.
    """
    c = hf_config
    model_type = getattr(c, 'model_type', None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise UnoConfigError(
            f"cannot convert a '{model_type}' model: uno reproduces "
            f'{", ".join(SUPPORTED_MODEL_TYPES)} decoders only')
    problems = []
    if getattr(c, 'hidden_act', 'silu') != 'silu':
        problems.append(f'hidden_act={c.hidden_act!r} (uno: silu)')
    if getattr(c, 'mlp_bias', False):
        problems.append('mlp_bias=True (uno: no MLP bias)')
    if model_type == 'qwen2':
        qkv_bias = True  # Qwen2 always has q/k/v biases, never o_proj's
    else:
        qkv_bias = bool(getattr(c, 'attention_bias', False))
        if qkv_bias:
            problems.append('attention_bias=True also adds an o_proj bias, '
                            'which uno does not have')
    layer_types = getattr(c, 'layer_types', None) or []
    if getattr(c, 'use_sliding_window', False) or any(
            t != 'full_attention' for t in layer_types):
        problems.append('sliding-window attention (uno: full attention)')
    if problems:
        raise UnoConfigError(f'unsupported {model_type} config: ' +
                             '; '.join(problems))
    head_dim = getattr(c, 'head_dim', None) or (c.hidden_size //
                                                c.num_attention_heads)
    return MoTConfig(
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        num_layers=c.num_hidden_layers,
        num_heads=c.num_attention_heads,
        num_kv_heads=getattr(c, 'num_key_value_heads', None) or
        c.num_attention_heads,
        head_dim=head_dim,
        intermediate_size=c.intermediate_size,
        rope_theta=_rope_theta(c),
        rms_norm_eps=c.rms_norm_eps,
        qkv_bias=qkv_bias,
        qk_norm=model_type == 'qwen3',
        tie_word_embeddings=bool(getattr(c, 'tie_word_embeddings', False)))


def hf_key_to_uno(key: str, expert: str = 'und') -> Optional[str]:
    """uno name of the transformers parameter ``key``, or None if unknown.

    Args:
        key (str): A transformers ``*ForCausalLM`` state-dict key.
        expert (str): The expert that receives decoder weights. Defaults
            to ``'und'``.
    """
    if key == 'model.embed_tokens.weight':
        return 'embed_tokens.weight'
    if key == 'lm_head.weight':
        return 'lm_head.weight'
    if key == 'model.norm.weight':
        return f'decoder.norm.{expert}.weight'
    m = _HF_LAYER.match(key)
    if m and m.group(2) in _LAYER_NAMES:
        return (f'decoder.layers.{m.group(1)}.experts.{expert}.'
                f'{_LAYER_NAMES[m.group(2)]}')
    return None


def uno_key_to_hf(key: str, expert: str = 'und') -> Optional[str]:
    """transformers name of the uno parameter ``key`` of ``expert``.

    Returns None for keys outside the language model (``vae2llm``,
    encoders, ...) and for the other expert's weights.
    """
    if key in ('embed_tokens.weight', 'lm_head.weight'):
        return ('model.embed_tokens.weight'
                if key.startswith('embed') else 'lm_head.weight')
    m = _UNO_NORM.match(key)
    if m:
        return 'model.norm.weight' if m.group(1) == expert else None
    m = _UNO_LAYER.match(key)
    if m and m.group(2) == expert and m.group(3) in _EXPERT_NAMES:
        return f'model.layers.{m.group(1)}.{_EXPERT_NAMES[m.group(3)]}'
    return None


def is_derived_key(key: str) -> bool:
    """Whether ``key`` is a buffer uno recomputes (RoPE frequencies)."""
    return key.endswith('rotary_emb.inv_freq')


def hf_to_uno(state_dict: Dict,
              cfg: MoTConfig,
              experts: Sequence[str] = ('und', ),
              strict: bool = True) -> Dict:
    """Rename a transformers causal-LM state dict to uno names.

    Args:
        state_dict (dict): ``{hf_name: tensor}``.
        cfg (MoTConfig): The target decoder (for tied embeddings).
        experts (Sequence[str]): Experts that receive the decoder weights;
            ``('und', 'gen')`` fills both with the same tensors (the copy
            initialisation). Defaults to ``('und',)``.
        strict (bool): Raise on keys that have no uno name; otherwise
            they are dropped. Defaults to True.

    Returns:
        dict: ``{uno_name: tensor}``. With tied embeddings and no
        ``lm_head.weight`` in ``state_dict`` (transformers drops the tied
        copy when saving), ``lm_head.weight`` is the embedding tensor.
    """
    for e in experts:
        if e not in EXPERTS:
            raise UnoConfigError(f'unknown expert {e!r}; expected one of '
                                 f'{EXPERTS}')
    out, unknown = {}, []
    for key, value in state_dict.items():
        if hf_key_to_uno(key) is None:
            if not is_derived_key(key):
                unknown.append(key)
            continue
        for e in experts:
            out[hf_key_to_uno(key, e)] = value
    if unknown and strict:
        raise KeyError(f'{len(unknown)} keys have no uno name: '
                       f'{short_list(unknown, 6)}')
    if (cfg.tie_word_embeddings and 'lm_head.weight' not in out
            and 'embed_tokens.weight' in out):
        out['lm_head.weight'] = out['embed_tokens.weight']
    return out


def uno_to_hf(state_dict: Dict, cfg: MoTConfig, expert: str = 'und') -> Dict:
    """Export one expert of a uno state dict as a transformers state dict.

    Keys outside the language model and the other expert's weights are
    left out. The result loads into the ``*ForCausalLM`` built from the
    transformers config that :func:`mot_config_from_hf` maps onto ``cfg``.

    Args:
        state_dict (dict): ``{uno_name: tensor}``.
        cfg (MoTConfig): The decoder configuration (kept for symmetry with
            :func:`hf_to_uno` and for checks).
        expert (str): ``'und'`` or ``'gen'``. Defaults to ``'und'``.

    Returns:
        dict: ``{hf_name: tensor}``.
    """
    if expert not in EXPERTS:
        raise UnoConfigError(f'unknown expert {expert!r}; expected one of '
                             f'{EXPERTS}')
    out = {}
    for key, value in state_dict.items():
        hf = uno_key_to_hf(key, expert)
        if hf is not None:
            out[hf] = value
    num_layers = {int(_HF_LAYER.match(k).group(1))
                  for k in out if _HF_LAYER.match(k)}
    if num_layers and max(num_layers) >= cfg.num_layers:
        raise UnoConfigError(f'state dict has layer {max(num_layers)} but '
                             f'cfg.num_layers={cfg.num_layers}')
    return out


def expected_uno_keys(cfg: MoTConfig,
                      experts: Sequence[str] = ('und', )) -> list:
    """uno names a converted transformers checkpoint provides for ``cfg``.
    """
    per_layer = [v for v in _LAYER_NAMES.values()
                 if cfg.qkv_bias or not v.endswith('_proj.bias')]
    if not cfg.qk_norm:
        per_layer = [v for v in per_layer
                     if v not in ('q_norm.weight', 'k_norm.weight')]
    keys = ['embed_tokens.weight', 'lm_head.weight']
    for e in experts:
        keys.append(f'decoder.norm.{e}.weight')
        keys += [f'decoder.layers.{i}.experts.{e}.{name}'
                 for i in range(cfg.num_layers) for name in per_layer]
    return keys


__all__ = [
    'mot_config_from_hf', 'hf_to_uno', 'uno_to_hf', 'hf_key_to_uno',
    'uno_key_to_hf', 'expected_uno_keys', 'is_derived_key',
    'SUPPORTED_MODEL_TYPES'
]
