"""The MoT decoder: naming contract, routing, attention backends."""
import pytest
import torch

from tests.conftest import t2i_sample
from uno.structures.packing import pack_sequences
from uno.models.attention import EagerAttention, SDPAAttention
from uno.models.mot import MoTConfig, MoTDecoder, make_routes
from uno.registry import ATTENTION


def _decoder(**kw):
    torch.manual_seed(0)
    cfg = MoTConfig(vocab_size=32, hidden_size=32, num_layers=2, num_heads=4,
                    num_kv_heads=2, intermediate_size=64, **kw)
    return MoTDecoder(cfg).eval()


def _run(decoder, batch, x, backend=None):
    backend = backend or SDPAAttention()
    routes = make_routes(batch.und_index, batch.gen_index)
    out, _ = decoder(x, batch.position_ids, routes, backend,
                     backend.prepare(batch))
    return out


def test_expert_naming_contract():
    names = [n for n, _ in _decoder(qk_norm=True).named_parameters()]
    gen = [n for n in names if '.experts.gen.' in n or n.startswith(
        'norm.gen')]
    und = [n for n in names if '.experts.und.' in n or n.startswith(
        'norm.und')]
    assert len(gen) == len(und) > 0
    assert sorted(n.replace('gen', 'und') for n in gen) == sorted(und)
    assert set(names) == set(gen) | set(und)
    assert any(n.endswith('experts.gen.q_norm.weight') for n in gen)


def test_sdpa_matches_eager_reference():
    batch = pack_sequences([t2i_sample(seed=0, caption_len=3,
                                       num_queries=2),
                            t2i_sample(seed=1, prompt_len=6)],
                           latent_stride=4)
    dec = _decoder()
    x = torch.randn(batch.num_tokens, 32)
    ref = _run(dec, batch, x, EagerAttention())
    out = _run(dec, batch, x, SDPAAttention())
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_packed_samples_are_isolated():
    a, b = t2i_sample(seed=0), t2i_sample(seed=1, prompt_len=5)
    batch = pack_sequences([a, b], latent_stride=4)
    dec = _decoder()
    x = torch.randn(batch.num_tokens, 32)
    out = _run(dec, batch, x)
    x2 = x.clone()
    second = batch.sample_ids == 1
    x2[second] = torch.randn(int(second.sum()), 32)
    out2 = _run(dec, batch, x2)
    torch.testing.assert_close(out[~second], out2[~second])
    assert not torch.allclose(out[second], out2[second])


def test_identical_experts_make_routing_irrelevant():
    batch = pack_sequences([t2i_sample()], latent_stride=4)
    dec = _decoder()
    dec.copy_und_to_gen()
    x = torch.randn(batch.num_tokens, 32)
    routed = _run(dec, batch, x)
    everything = torch.arange(batch.num_tokens)
    backend = SDPAAttention()
    dense, _ = dec(x, batch.position_ids, [('und', everything)], backend,
                   backend.prepare(batch))
    torch.testing.assert_close(routed, dense, rtol=1e-5, atol=1e-6)


def test_experts_differ_after_independent_init():
    batch = pack_sequences([t2i_sample()], latent_stride=4)
    dec = _decoder()
    x = torch.randn(batch.num_tokens, 32)
    routed = _run(dec, batch, x)
    everything = torch.arange(batch.num_tokens)
    backend = SDPAAttention()
    dense, _ = dec(x, batch.position_ids, [('und', everything)], backend,
                   backend.prepare(batch))
    gen = batch.gen_index
    assert not torch.allclose(routed[gen], dense[gen])


def test_activation_checkpointing_same_gradients():
    batch = pack_sequences([t2i_sample()], latent_stride=4)
    grads = []
    for ckpt in (False, True):
        dec = _decoder(activation_checkpointing=ckpt).train()
        x = torch.randn(batch.num_tokens, 32,
                        generator=torch.Generator().manual_seed(1))
        _run(dec, batch, x).square().sum().backward()
        grads.append(dec.layers[0].experts['gen'].q_proj.weight.grad)
    torch.testing.assert_close(grads[0], grads[1])


def test_attention_registry_names_and_error():
    assert {'sdpa', 'eager'} <= set(ATTENTION.module_dict)
    from uno.errors import UnoConfigError
    with pytest.raises(UnoConfigError, match="did you mean 'sdpa'"):
        ATTENTION.build(dict(type='spda'))


def test_rotary_keeps_dtypes_and_fp32_frequencies():
    """q/k keep their dtype (fused kernels refuse mixed q/k/v dtypes) and a
    bf16-cast model still computes RoPE angles in fp32."""
    from uno.models.mot.layers import RotaryEmbedding, apply_rotary
    rope = RotaryEmbedding(16)
    pos = torch.arange(4000)
    cos32, sin32 = rope(pos, torch.float32)
    x = torch.randn(4000, 2, 16, dtype=torch.bfloat16)
    assert apply_rotary(x, cos32, sin32).dtype == torch.bfloat16
    rope.to(torch.bfloat16)
    cos, sin = rope(pos, torch.float32)
    torch.testing.assert_close(cos, cos32)
    torch.testing.assert_close(sin, sin32)
