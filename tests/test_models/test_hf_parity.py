"""The MoT decoder with identical experts equals transformers' decoders.

Tiny random ``Qwen2ForCausalLM`` / ``LlamaForCausalLM`` /
``Qwen3ForCausalLM`` (fp32, eager attention) are converted with
:mod:`uno.models.external.hf_keys` and loaded into a :class:`UnoModel`; packed
prompts must give each prompt's transformers logits.
"""
import pytest
import torch
from transformers import (LlamaConfig, LlamaForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM)

from uno.structures.packing import pack_sequences
from uno.models.external.hf_keys import (expected_uno_keys, hf_to_uno,
                                         mot_config_from_hf, uno_to_hf)
from uno.models.external.pretrained import load_pretrained_llm
from uno.registry import MODELS
from uno.structures import Segment, SequencePlan
from uno.errors import UnoConfigError

SHAPES = dict(vocab_size=96, hidden_size=64, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2,
              intermediate_size=96, rms_norm_eps=1e-6,
              max_position_embeddings=64)
ARCHS = dict(
    qwen2=(Qwen2Config, Qwen2ForCausalLM, dict(rope_theta=1e6)),
    llama=(LlamaConfig, LlamaForCausalLM,
           dict(rope_theta=5e5, tie_word_embeddings=True)),
    qwen3=(Qwen3Config, Qwen3ForCausalLM, dict(head_dim=16)),
)
PROMPTS = ([1, 17, 5, 33, 80, 2, 41], [1, 9, 60, 3])


def _hf(arch, **kw):
    config_cls, model_cls, extra = ARCHS[arch]
    config = config_cls(**dict(SHAPES, **extra, **kw))
    config._attn_implementation = 'eager'
    torch.manual_seed(0)
    model = model_cls(config).eval()
    with torch.no_grad():  # random norms/biases: catch swapped names
        for name, p in model.named_parameters():
            if name.endswith('norm.weight') or name.endswith('bias'):
                p.add_(torch.rand_like(p) * 0.5)
    return model


def _uno(hf):
    llm = mot_config_from_hf(hf.config).to_dict()
    torch.manual_seed(1)
    model = MODELS.build(dict(
        type='UnoModel', llm=llm, attention=dict(type='sdpa'),
        latent_encoder=dict(type='PixelPatchifier', patch_size=4)))
    report = load_pretrained_llm(model, hf)
    assert report.ok, str(report)
    return model.eval()


def _packed(prompts):
    return pack_sequences([SequencePlan([Segment('text', tokens=list(p))])
                           for p in prompts])


def _hf_logits(hf, prompt):
    with torch.no_grad():
        return hf(torch.tensor([prompt])).logits[0]  # (L, V)


def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize('arch', sorted(ARCHS))
def test_packed_prompts_match_transformers(arch):
    hf = _hf(arch)
    model = _uno(hf)
    batch = _packed(PROMPTS)
    with torch.no_grad():
        logits = model.lm_head(model(batch).hidden)  # (L, V)
    for b, prompt in enumerate(PROMPTS):
        ref = _hf_logits(hf, prompt)
        out = logits[batch.sample_ids == b]
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        assert _rel(out, ref) < 1e-5


@pytest.mark.parametrize('arch', ['qwen2', 'qwen3'])
def test_routing_is_irrelevant_after_copy_init(arch):
    hf = _hf(arch)
    model = _uno(hf)  # load_pretrained_llm copies und -> gen
    batch = _packed(PROMPTS[:1])
    n = batch.num_tokens
    routes = [('und', torch.arange(0, n, 2)), ('gen', torch.arange(1, n, 2))]
    with torch.no_grad():
        x = model.embed(batch)
        mask = model.attention.prepare(batch)
        hidden, _ = model.decoder(x, batch.position_ids, routes,
                                  model.attention, mask)
        logits = model.lm_head(hidden)
    ref = _hf_logits(hf, PROMPTS[0])
    torch.testing.assert_close(logits, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('arch', sorted(ARCHS))
def test_converters_round_trip(arch):
    hf = _hf(arch)
    sd = hf.state_dict()
    cfg = mot_config_from_hf(hf.config)
    uno = hf_to_uno(sd, cfg, experts=('und', 'gen'))
    assert set(uno) == set(expected_uno_keys(cfg, ('und', 'gen')))
    back = uno_to_hf(uno, cfg)
    assert set(back) == set(sd)
    assert all(back[k] is sd[k] for k in sd)
    gen = uno_to_hf(uno, cfg, expert='gen')
    assert all(gen[k] is sd[k] for k in sd)


def test_tied_embeddings_without_lm_head():
    hf = _hf('llama')
    cfg = mot_config_from_hf(hf.config)
    assert cfg.tie_word_embeddings and not cfg.qkv_bias
    sd = {k: v for k, v in hf.state_dict().items() if k != 'lm_head.weight'}
    uno = hf_to_uno(sd, cfg)
    assert uno['lm_head.weight'] is uno['embed_tokens.weight']


def test_config_mapping_and_refusals():
    cfg = mot_config_from_hf(_hf('qwen3').config)
    assert (cfg.qk_norm, cfg.head_dim, cfg.num_kv_heads) == (True, 16, 2)
    cfg = mot_config_from_hf(_hf('qwen2').config)
    assert cfg.qkv_bias and cfg.rope_theta == 1e6 and not cfg.qk_norm
    scaled = Qwen2Config(**SHAPES, rope_parameters=dict(
        rope_type='linear', factor=2.0, rope_theta=1e4))
    with pytest.raises(UnoConfigError, match="RoPE scaling type 'linear'"):
        mot_config_from_hf(scaled)
    with pytest.raises(UnoConfigError, match='o_proj bias'):
        mot_config_from_hf(LlamaConfig(**SHAPES, attention_bias=True))
    with pytest.raises(KeyError, match='no uno name'):
        hf_to_uno({'model.layers.0.self_attn.o_proj.bias': None}, cfg)
