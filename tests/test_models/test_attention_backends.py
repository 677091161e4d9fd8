"""Attention backends (flex, xformers, auto) against the eager reference."""
import sys

import pytest
import torch

from tests.conftest import t2i_sample
from uno.structures.packing import pack_sequences
from uno.models.attention import (AutoAttention, EagerAttention,
                                  FlexAttention, SDPAAttention)
from uno.registry import ATTENTION
from uno.errors import BackendUnavailableError, UnoConfigError

H, H_KV, D = 4, 2, 8
# uncompiled flex is the point of the CPU tests; torch warns about speed
pytestmark = pytest.mark.filterwarnings(
    'ignore:flex_attention called without torch.compile')


def _batch(device='cpu'):
    """Three samples, two of them UNO-style: caption and metaqueries see
    the noisy latents but not the prompt."""
    plans = [t2i_sample(seed=0, caption_len=3, num_queries=2),
             t2i_sample(seed=1, prompt_len=6),
             t2i_sample(seed=2, caption_len=2, num_queries=3,
                        mq_sees_caption=True)]
    return pack_sequences(plans, latent_stride=4).to(device)


def _qkv(q_len, k_len, device='cpu', requires_grad=False):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(q_len, H, D, generator=g)
    k = torch.randn(k_len, H_KV, D, generator=g)
    v = torch.randn(k_len, H_KV, D, generator=g)
    return [t.to(device).requires_grad_(requires_grad) for t in (q, k, v)]


def _reference(batch, q, k, v, query_index=None, key_index=None):
    eager = EagerAttention()
    return eager(q, k, v, eager.prepare(batch, query_index, key_index))


def test_registry_has_every_backend():
    assert {'sdpa', 'eager', 'flex', 'xformers', 'auto'} <= set(
        ATTENTION.module_dict)


def test_uno_plan_mask_hides_prompt_from_caption():
    batch = _batch()
    mask = batch.dense_mask()
    seg = batch.segment_ids
    caption, prompt, noisy = seg == 2, seg == 0, seg == 1
    assert not mask[caption][:, prompt].any()
    assert mask[caption][:, noisy].all()


@torch.no_grad()
def test_flex_forward_matches_eager_on_cpu():
    batch = _batch()
    q, k, v = _qkv(batch.num_tokens, batch.num_tokens)
    flex = FlexAttention()
    out = flex(q, k, v, flex.prepare(batch))
    torch.testing.assert_close(out, _reference(batch, q, k, v),
                               rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_backends_accept_a_cached_prefix():
    """Queries are the last segments, keys the cache then the queries."""
    batch = _batch()
    seg = batch.segment_ids
    new = (seg == 1) | (seg == 2)  # noisy image and caption of sample 0
    query = torch.nonzero(new).flatten()
    keys = torch.cat([torch.nonzero(~new).flatten(), query])
    q, k, v = _qkv(query.numel(), keys.numel())
    ref = _reference(batch, q, k, v, query, keys)
    for backend in (SDPAAttention(), FlexAttention(), AutoAttention()):
        out = backend(q, k, v, backend.prepare(batch, query, keys))
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        dense = batch.dense_mask()[query][:, keys]
        out = backend(q, k, v, backend.prepare_dense(dense))
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_sdpa_per_sample_blocks_match_dense_forward_and_backward():
    """The default (per-sample blocks) and the dense-mask SDPA agree with
    the eager reference, values and gradients."""
    batch = _batch()
    grads = []
    for backend in (SDPAAttention(), SDPAAttention(blocked=False),
                    EagerAttention()):
        q, k, v = _qkv(batch.num_tokens, batch.num_tokens,
                       requires_grad=True)
        out = backend(q, k, v, backend.prepare(batch))
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum(
        ).backward()
        grads.append([out.detach(), q.grad, k.grad, v.grad])
    for other in grads[1:]:
        for a, b in zip(grads[0], other):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_flex_refuses_cpu_backward_clearly():
    batch = _batch()
    q, k, v = _qkv(batch.num_tokens, batch.num_tokens, requires_grad=True)
    flex = ATTENTION.build(dict(type='flex'))
    assert not flex.trains_on_cpu
    with pytest.raises(RuntimeError, match="type='sdpa'"):
        flex(q, k, v, flex.prepare(batch))


def test_auto_is_sdpa_and_trains_on_cpu():
    auto = ATTENTION.build(dict(type='auto'))
    assert isinstance(auto, SDPAAttention)
    assert auto.trains_on_cpu
    batch = _batch()
    q, k, v = _qkv(batch.num_tokens, batch.num_tokens, requires_grad=True)
    out = auto(q, k, v, auto.prepare(batch))
    torch.testing.assert_close(out, _reference(batch, q, k, v),
                               rtol=1e-5, atol=1e-5)
    out.sum().backward()
    assert q.grad is not None


@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU-only check')
def test_xformers_on_cpu_machine_is_a_clear_error():
    with pytest.raises(UnoConfigError, match=r"pip install -e '\.\["):
        ATTENTION.build(dict(type='xformers'))


def test_modules_do_not_import_optional_dependencies():
    if 'xformers' in sys.modules:
        pytest.skip('xformers was imported by something else')
    import uno.models.attention.xformers  # noqa: F401
    assert 'xformers' not in sys.modules


def _grads(backend, batch, device):
    q, k, v = _qkv(batch.num_tokens, batch.num_tokens, device, True)
    out = backend(q, k, v, backend.prepare(batch))
    (out * torch.linspace(-1, 1, out.numel(), device=device).view_as(out)
     ).sum().backward()
    return out.detach(), [t.grad for t in (q, k, v)]


@pytest.mark.gpu
@pytest.mark.parametrize('name', ['flex', 'xformers', 'auto'])
def test_cuda_forward_and_backward_match_eager(name):
    if name == 'xformers':
        pytest.importorskip('xformers.ops')
    batch = _batch('cuda')
    ref, ref_grads = _grads(EagerAttention(), batch, 'cuda')
    out, grads = _grads(ATTENTION.build(dict(type=name)), batch, 'cuda')
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-4)


def test_compiled_flex_refuses_small_head_dim_clearly():
    """torch inductor's flex kernel needs head dim >= 16 (found by the GPU
    check as a LoweringException deep in compilation)."""
    batch = _batch()
    q, k, v = _qkv(batch.num_tokens, batch.num_tokens)
    assert q.shape[-1] < 16
    flex = ATTENTION.build(dict(type='flex', compile=True))
    mask = FlexAttention().prepare(batch)  # compiling it costs ~25 s here
    with torch.no_grad(), pytest.raises(BackendUnavailableError,
                                        match='at least 16'):
        flex(q, k, v, mask)
