"""tools/analysis/benchmark.py: the FLOP counter by hand, a tiny run.

No timing is asserted: the figures are the tool's output, not a test.
"""
import json
import os.path as osp
import sys

import torch

from tests.conftest import REPO, t2i_sample
from uno.structures.packing import pack_sequences
from uno.models.attention import EagerAttention, SDPAAttention
from uno.models.attention.blocks import sample_blocks
from uno.models.mot import MoTConfig
from uno.registry import MODELS
sys.path.insert(0, osp.join(REPO, 'tools', 'analysis'))
from _flops import (FlopCount, decoder_flops,  # noqa: E402
                    expert_weights_per_token, grad_tokens, model_flops,
                    visible_pairs)

CFG = MoTConfig(vocab_size=32, hidden_size=8, num_layers=3, num_heads=2,
                num_kv_heads=1, intermediate_size=16)


def test_decoder_flops_by_hand():
    # per token and layer: q 8x8, k 8x4, v 8x4, o 8x8, SwiGLU 3 x 8x16
    assert expert_weights_per_token(CFG) == 64 + 32 + 32 + 64 + 384
    count = decoder_flops(CFG, dict(und=3, gen=2), dict(und=False,
                                                        gen=True), pairs=7)
    w, layers = 576, 3
    attn = 4 * 7 * 2 * 4  # QK^T and PV: 2 FLOPs x pairs x heads x dim, x2
    fwd = 2 * 5 * w + attn
    bwd = 2 * 5 * w + 2 * 2 * w + 2 * attn  # input grads, gen weights
    assert count == FlopCount(fwd * layers, bwd * layers)
    # a prompt that needs no gradient: 2 und tokens, 3 pairs left out
    part = decoder_flops(CFG, dict(und=3, gen=2), dict(und=False, gen=True),
                         pairs=7, grad_routed=dict(und=1, gen=2),
                         grad_pairs=4)
    assert part.forward == count.forward
    assert count.backward - part.backward == layers * (2 * 2 * w + 8 * 3 * 8)


def test_visible_pairs_and_gradient_tokens():
    # sample 0: prompt of 5 (causal: 15 pairs), noisy segment of 4 + 2
    # markers (full: 36, sees the prompt: 30); sample 1 likewise with a
    # prompt of 3 (6 + 36 + 18)
    batch = pack_sequences([t2i_sample(prompt_len=3),
                            t2i_sample(prompt_len=1, seed=1)],
                           latent_stride=4)
    assert visible_pairs(batch) == 15 + 36 + 30 + 6 + 36 + 18
    assert visible_pairs(batch, chunk=4) == int(batch.dense_mask().sum())
    torch.manual_seed(0)
    model = MODELS.build(dict(
        type='UnoModel', llm=CFG.to_dict(),
        latent_encoder=dict(type='PixelPatchifier', patch_size=4),
        freeze=dict(und=True, embed_tokens=True, lm_head=True)))
    grad = grad_tokens(model, batch)  # frozen prompts need no gradient
    assert torch.equal(grad, batch.segment_ids % 2 == 1)
    count = model_flops(model, batch)
    pairs = 36 + 30 + 36 + 18
    assert count['decoder'] == decoder_flops(
        CFG, dict(und=12, gen=8), dict(und=False, gen=True),
        visible_pairs(batch), dict(und=4, gen=8), pairs)
    latents = 2 * 8 * 48 * 8  # vae2llm on 8 tokens: weights only
    head = 2 * 8 * 8 * 48 * 2  # llm2vae: forward, weights, inputs
    assert count['io'] == FlopCount(latents + head // 2,
                                    latents + head)


def test_sample_blocks_match_the_dense_mask():
    batch = pack_sequences([t2i_sample(seed=0, caption_len=3,
                                       num_queries=2),
                            t2i_sample(seed=1, prompt_len=6)],
                           latent_stride=4)
    g = torch.Generator().manual_seed(0)
    q = torch.randn(batch.num_tokens, 4, 8, generator=g, requires_grad=True)
    k = torch.randn(batch.num_tokens, 2, 8, generator=g, requires_grad=True)
    v = torch.randn(batch.num_tokens, 2, 8, generator=g, requires_grad=True)
    blocks = sample_blocks(batch)
    assert blocks.shape[0] == 2 and blocks.mask.shape[1] == 1
    rows = blocks.mask.flatten(0, 2)[blocks.q_slots]  # real queries
    assert int(rows.sum()) == int(batch.dense_mask().sum())
    sdpa, eager = SDPAAttention(), EagerAttention()
    out = sdpa(q, k, v, sdpa.prepare(batch))
    ref = eager(q, k, v, eager.prepare(batch))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    refs = torch.autograd.grad(ref.square().sum(), (q, k, v))
    for a, b in zip(grads, refs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_quick_run_writes_every_figure(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(osp.join(REPO, 'tools', 'analysis'))
    sys.modules.pop('benchmark', None)
    import benchmark
    out = tmp_path / 'bench.json'
    results = benchmark.main(['--quick', '--device', 'cpu', '--workers',
                              '0', '--out', str(out)])
    saved = json.loads(out.read_text())
    keys = ('mfu', 'uno_overhead', 'mot_vs_dense', 'packing', 'sampling',
            'data', 'memory')
    for key in keys:
        assert key in results and key in saved
        assert isinstance(saved[key]['value'], float)
        assert saved[key]['value'] > 0 and 'target' in saved[key]
    assert saved['meta']['preset'] == 'quick'
    assert saved['sampling']['max_abs_diff'] < 1e-4
    assert 0 < saved['mfu']['value'] < 1
    assert saved['memory']['peak_on_bytes'] > 0


def test_peak_matmul_is_positive(monkeypatch):
    monkeypatch.syspath_prepend(osp.join(REPO, 'tools', 'analysis'))
    import _bench_setup
    peak = _bench_setup.peak_matmul('cpu', torch.float32, sizes=(64, ),
                                    repeats=1)
    assert peak['flops'] > 0 and peak['size'] == 64
