"""KV-cached decoding, the flow sampler and the captioner."""
import pytest
import torch
from torch import nn

from tests.conftest import EOS, TinyTokenizer, t2i_sample
from uno.structures.packing import pack_sequences
from uno.structures.plans import t2i_plan
from uno.models.mot.decoder import KVCache
from uno.models.sampling import Captioner, FlowSampler
from uno.models.sampling.packed_cache import local_routes
from uno.models.unified_model import MLPConnector
from uno.registry import MODELS
from uno.structures import NoisyLatents, SequencePlan

PROMPTS = [[10, 11, 12], [13, 14, 15, 16, 17]]


@pytest.fixture
def model(tiny_model_cfg):
    torch.manual_seed(0)
    model = MODELS.build(tiny_model_cfg).eval()
    with torch.no_grad():
        # larger weights than the 0.02 init, so that outputs depend on
        # the inputs visibly; the velocity head becomes non-zero
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(std=0.3)
        model.llm2vae.bias.normal_(std=0.1)
    return model


def _sampler(**kw):
    return FlowSampler(**dict(dict(num_steps=3), **kw))


def _sample(model, sampler, prompts=PROMPTS, size=8):
    return sampler.sample(model, prompts, TinyTokenizer(), size,
                          torch.Generator().manual_seed(0))


@torch.no_grad()
def _reference(model, sampler, prompts=PROMPTS, size=8):
    """The sampler written with plain full forwards, conditional and
    unconditional batches run separately."""
    tok, canvas = TinyTokenizer(), torch.zeros(3, size, size)

    def velocity(texts, x, t):
        plans = [SequencePlan(t2i_plan(p, tok), images=[canvas])
                 for p in texts]
        batch = pack_sequences(plans, latent_stride=4)
        noisy = NoisyLatents(x.flatten(0, 1), torch.full((len(texts), ), t))
        return model(batch, noisy).velocity.unflatten(0, x.shape[:2])

    n = (size // 4)**2
    x = torch.randn(len(prompts), n, 48,
                    generator=torch.Generator().manual_seed(0))
    ts = sampler.timesteps().tolist()
    for t, t_next in zip(ts[:-1], ts[1:]):
        v = velocity(prompts, x, t)
        if sampler.guided_at(t):
            v_u = velocity([[]] * len(prompts), x, t)
            v = v_u + sampler.cfg_scale * (v - v_u)
        x = x - v * (t - t_next)
    return model.latent_encoder.decode(x, (size // 4, ) * 2).clamp(-1, 1)


@torch.no_grad()
def test_decoder_with_cache_equals_full_forward(model):
    batch = pack_sequences([t2i_sample(caption_len=3),
                            t2i_sample(seed=1, prompt_len=5)],
                           latent_stride=4)
    dec, attn = model.decoder, model.attention
    x = torch.randn(batch.num_tokens, 32)
    full, _ = dec(x, batch.position_ids, local_routes(
        batch, torch.arange(batch.num_tokens)), attn, attn.prepare(batch))
    # the prompts, then the noisy image, then the caption of sample 0
    parts = [(0, 3), (1, 4), (2, )]
    past = seen = None
    for seg in parts:
        index = torch.nonzero(torch.isin(batch.segment_ids,
                                         torch.tensor(seg))).flatten()
        keys = index if past is None else torch.cat([seen, index])
        cache = KVCache()
        out, _ = dec(x[index], batch.position_ids[index],
                     local_routes(batch, index), attn,
                     attn.prepare(batch, index, keys), past=past,
                     cache=cache)
        torch.testing.assert_close(out, full[index], rtol=1e-5, atol=1e-5)
        past, seen = cache, keys
        assert len(past) == keys.numel() and past.num_layers == 2
    with pytest.raises(ValueError, match='empty'):
        dec(x[index], batch.position_ids[index], local_routes(batch, index),
            attn, attn.prepare(batch, index, index), cache=past)


@pytest.mark.parametrize('interval', [(0.0, 1.0), (0.5, 1.0)])
def test_cached_and_uncached_sampling_agree(model, interval):
    kw = dict(cfg_scale=3.0, cfg_interval=interval)
    cached = _sample(model, _sampler(use_kv_cache=True, **kw))
    full = _sample(model, _sampler(use_kv_cache=False, **kw))
    torch.testing.assert_close(cached, full, rtol=1e-5, atol=1e-5)


def test_batched_cfg_equals_separate_forwards(model):
    sampler = _sampler(cfg_scale=3.0, cfg_interval=(0.5, 1.0))
    ref = _reference(model, sampler)
    for cache in (True, False):
        sampler.use_kv_cache = cache
        torch.testing.assert_close(_sample(model, sampler), ref,
                                   rtol=1e-5, atol=1e-5)


def test_cfg_scale_one_is_conditional_only(model):
    out = _sample(model, _sampler(cfg_scale=1.0))
    ref = _reference(model, _sampler(cfg_scale=1.0, cfg_interval=(1, 1)))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    guided = _sample(model, _sampler(cfg_scale=4.0))
    assert not torch.allclose(out, guided)


def test_output_shape_and_range(model):
    images = _sample(model, _sampler(num_steps=2), size=16)
    assert images.shape == (2, 3, 16, 16)
    assert images.min() >= -1 and images.max() <= 1
    assert images.std() > 0
    with pytest.raises(ValueError, match='multiple'):
        _sample(model, _sampler(), size=10)


def test_schedule_is_shifted_linspace():
    t = FlowSampler(num_steps=4, shift=3.0).timesteps()
    lin = torch.linspace(1, 0, 5)
    torch.testing.assert_close(t, 3 * lin / (1 + 2 * lin))
    assert t[0] == 1 and t[-1] == 0


def test_prompts_are_encoded_once(model):
    """The decoder sees every prompt token in the first call only."""
    seen = []
    hook = model.decoder.register_forward_pre_hook(
        lambda module, args: seen.append(args[0].shape[0]))
    _sample(model, _sampler(num_steps=4, cfg_scale=2.0))
    hook.remove()
    prompt_tokens = sum(len(p) + 2 for p in PROMPTS) + 2 * 2  # + uncond
    noisy_tokens = 2 * 2 * (4 + 2)  # (cond + uncond) x B x (N + markers)
    assert seen == [prompt_tokens] + [noisy_tokens] * 4
    seen.clear()
    hook = model.decoder.register_forward_pre_hook(
        lambda module, args: seen.append(args[0].shape[0]))
    _sample(model, _sampler(num_steps=4, cfg_scale=2.0, use_kv_cache=False))
    hook.remove()
    assert seen == [prompt_tokens + noisy_tokens] * 4


class TinyViT(nn.Module):
    """A stand-in understanding encoder: 4x4 patches -> 16 features."""
    feature_dim, stride = 16, 4

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(48, 16)

    def forward(self, images):
        p = images.unfold(2, 4, 4).unfold(3, 4, 4)  # (I, 3, h, w, 4, 4)
        p = p.permute(0, 2, 3, 1, 4, 5).flatten(3).flatten(1, 2)
        return self.proj(p)  # (I, N, 16)


def _images(n=3, size=8):
    return torch.rand(n, 3, size, size,
                      generator=torch.Generator().manual_seed(1)) * 2 - 1


@pytest.mark.parametrize('mode,prompt', [('latent', None),
                                         ('vit', [10, 11])])
def test_captioner_cached_equals_uncached(model, mode, prompt):
    if mode == 'vit':
        torch.manual_seed(0)
        model.und_encoder, model.connector = TinyViT(), MLPConnector(16, 32)
    tok, images = TinyTokenizer(), _images()
    outs = [Captioner(max_new_tokens=6, use_kv_cache=c).caption(
        model, images, tok, prompt_tokens=prompt, mode=mode)
        for c in (True, False)]
    assert outs[0] == outs[1]
    assert all(len(c) <= 6 for c in outs[0])
    assert len({tuple(c) for c in outs[0]}) > 1  # images differ


def test_captioner_sampling_cached_equals_uncached(model):
    outs = [Captioner(max_new_tokens=5, temperature=1.0, top_k=8,
                      use_kv_cache=c).caption(
                          model, _images(), TinyTokenizer(), mode='latent',
                          generator=torch.Generator().manual_seed(3))
            for c in (True, False)]
    assert outs[0] == outs[1]


def test_captioner_stops_at_eos(model):
    """Force <eos> for sample 1 at the 2nd step and for all at the 4th."""
    for cache in (True, False):
        calls = []

        def force(module, args, logits):
            calls.append(logits.shape[0])
            step = len(calls)
            if step == 2:
                logits[1 if logits.shape[0] == 3 else 0, EOS] = 1e4
            if step == 4:
                logits[:, EOS] = 1e4
            return logits

        hook = model.lm_head.register_forward_hook(force)
        caps = Captioner(max_new_tokens=10, use_kv_cache=cache).caption(
            model, _images(), TinyTokenizer(), mode='latent')
        hook.remove()
        assert [len(c) for c in caps] == [3, 1, 3]
        assert all(EOS not in c for c in caps)
        assert len(calls) == 4
        if cache:  # finished captions are dropped from the steps
            assert calls == [3, 3, 2, 2]


def test_edit_plans_cached_equals_uncached(uno_model_cfg):
    """Editing: the condition (clean source latents, source ViT tokens,
    instruction) is cached; results equal the uncached sampler."""
    from uno.structures.plans import edit_plan
    from uno.structures import SequencePlan
    torch.manual_seed(0)
    model = MODELS.build(uno_model_cfg).eval()
    torch.nn.init.normal_(model.llm2vae.weight, std=0.1)
    tok = TinyTokenizer()
    sources = torch.rand(2, 3, 8, 8) * 2 - 1
    blank = torch.zeros(3, 8, 8)

    def plans(instruction):
        return [SequencePlan(edit_plan(instruction, tok), images=[s, blank])
                for s in sources]

    out = []
    for cached in (True, False):
        sampler = FlowSampler(num_steps=3, cfg_scale=2.0,
                              use_kv_cache=cached)
        out.append(sampler.sample_plans(
            model, plans([10, 11]), plans([]),
            generator=torch.Generator().manual_seed(0)))
    torch.testing.assert_close(out[0], out[1], rtol=1e-5, atol=1e-5)
    assert out[0].shape == (2, 3, 8, 8)
    # the source image conditions the result
    other = FlowSampler(num_steps=3, cfg_scale=2.0).sample_plans(
        model, [SequencePlan(edit_plan([10, 11], tok),
                             images=[-s, blank]) for s in sources],
        plans([]), generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(other, out[0])


def test_captioner_top_k_and_temperature_shape_the_draw():
    """top_k samples only among the k most likely tokens; temperature 0 is
    greedy and a high temperature spreads the draws."""
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0, -1.0, -2.0]]).repeat(400, 1)
    g = torch.Generator().manual_seed(0)
    top2 = Captioner(temperature=5.0, top_k=2).next_tokens(logits, g)
    assert set(top2.tolist()) == {0, 1}
    top1 = Captioner(temperature=5.0, top_k=1).next_tokens(logits, g)
    assert top1.eq(0).all()
    spread = Captioner(temperature=5.0).next_tokens(logits, g)
    assert len(set(spread.tolist())) >= 5
    sharp = Captioner(temperature=0.05).next_tokens(logits, g)
    assert sharp.eq(0).all()
    greedy = Captioner(temperature=0.0, top_k=3).next_tokens(logits, g)
    assert greedy.eq(0).all()
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match='top_k'):
            Captioner(temperature=1.0, top_k=bad)
