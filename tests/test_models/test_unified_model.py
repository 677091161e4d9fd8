"""UnoModel: embeddings by kind, named outputs, freezing."""
import pytest
import torch

from tests.conftest import t2i_sample
from uno.structures.packing import pack_sequences
from uno.objectives import FlowMatchingObjective
from uno.registry import MODELS


def _model(cfg, **kw):
    torch.manual_seed(0)
    cfg = dict(cfg, **kw)
    return MODELS.build(cfg)


def _prepared(model, plans):
    """A packed batch and the noisy latents flow matching draws for it."""
    batch = pack_sequences(plans, latent_stride=4)
    noisy = FlowMatchingObjective().prepare(
        model, batch, torch.Generator().manual_seed(0))
    return batch, noisy


def test_forward_named_outputs(tiny_model_cfg):
    model = _model(tiny_model_cfg, metaquery=dict(num_queries=4))
    batch, noisy = _prepared(model, [
        t2i_sample(caption_len=3, num_queries=4), t2i_sample(seed=1)])
    out = model(batch, noisy, return_layers=(1, ))
    assert out.hidden.shape == (batch.num_tokens, 32)
    assert out.velocity.shape == (batch.noisy_index.numel(), 48)
    assert out.ce_logits.shape == (4, 32)
    assert out.mq_hidden.shape == (4, 32)
    assert set(out.layers) == {1}
    # the velocity head is zero-initialised
    assert out.velocity.abs().max() == 0


def test_noisy_batch_without_prepare_is_a_clear_error(tiny_model_cfg):
    model = _model(tiny_model_cfg)
    batch = pack_sequences([t2i_sample()], latent_stride=4)
    with pytest.raises(ValueError, match='no noisy latents were given'):
        model(batch)


def test_metaqueries_need_num_queries(tiny_model_cfg):
    model = _model(tiny_model_cfg)
    batch, noisy = _prepared(model, [t2i_sample(num_queries=2)])
    with pytest.raises(RuntimeError, match='num_queries is 0'):
        model(batch, noisy)


def test_freeze_sets_requires_grad_only(tiny_model_cfg):
    model = _model(tiny_model_cfg, freeze=dict(und=True, embed_tokens=True,
                                               lm_head=True))
    for name, p in model.named_parameters():
        frozen = ('.experts.und.' in name or name.startswith(
            ('decoder.norm.und', 'embed_tokens', 'lm_head')))
        assert p.requires_grad != frozen, name
    with pytest.raises(ValueError, match="did you mean 'und'"):
        _model(tiny_model_cfg, freeze=dict(udn=True))


def test_unknown_llm_key_names_close_match(tiny_model_cfg):
    cfg = dict(tiny_model_cfg)
    cfg['llm'] = dict(cfg['llm'], hiden_size=16)
    with pytest.raises(ValueError, match="did you mean 'hidden_size'"):
        MODELS.build(cfg)


def test_noise_changes_velocity_but_not_prompt_hidden(tiny_model_cfg):
    model = _model(tiny_model_cfg)
    torch.nn.init.normal_(model.llm2vae.weight, std=0.1)
    batch, noisy = _prepared(model, [t2i_sample()])
    out1 = model(batch, noisy)
    noisy.latents = torch.randn_like(noisy.latents)
    out2 = model(batch, noisy)
    prompt = batch.segment_ids == 0
    torch.testing.assert_close(out1.hidden[prompt], out2.hidden[prompt])
    assert not torch.allclose(out1.velocity, out2.velocity)


@pytest.mark.parametrize('device', [
    'cpu', pytest.param('cuda', marks=pytest.mark.gpu)])
def test_bf16_autocast_over_fp32_weights(uno_model_cfg, device):
    """Autocast (fp32 weights, bf16 matmuls) runs forward and backward
    and stays near fp32. On CUDA this caught ``index_copy`` refusing a
    Linear's bf16 rows into the fp32 stream (CPU autocast promotes)."""
    model = _model(uno_model_cfg, und_encoder=None).to(device)
    torch.nn.init.normal_(model.llm2vae.weight, std=0.02)  # zero-init head
    batch = pack_sequences([t2i_sample(caption_len=3, num_queries=4),
                            t2i_sample(seed=1)], latent_stride=4).to(device)
    noisy = FlowMatchingObjective().prepare(
        model, batch, torch.Generator(device).manual_seed(0))
    with torch.autocast(device, dtype=torch.bfloat16):
        out = model(batch, noisy)
    assert out.hidden.dtype == torch.float32
    ref = model(batch, noisy)
    torch.testing.assert_close(out.hidden, ref.hidden, rtol=0.05, atol=0.05)
    out.velocity.float().square().mean().backward()
    grad = model.decoder.layers[0].experts['gen'].mlp.down_proj.weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_timestep_scale_multiplies_t_before_the_sinusoid(tiny_model_cfg):
    # BAGEL embeds t in [0, 1] as it is (scale 1); the default is DiT's 1000
    bagel = _model(tiny_model_cfg, timestep_scale=1.0)
    dit = _model(tiny_model_cfg)  # same seed: the same MLP weights
    t = torch.tensor([0.3, 0.7])
    torch.testing.assert_close(bagel.time_embedder(t * 1000),
                               dit.time_embedder(t))
    assert not torch.allclose(bagel.time_embedder(t), dit.time_embedder(t))


def test_metaquery_init_std(tiny_model_cfg):
    stds = []
    for std in (0.02, 0.5):
        model = _model(tiny_model_cfg,
                       metaquery=dict(num_queries=16, init_std=std))
        stds.append(float(model.metaquery.weight.detach().std()))
    assert stds[0] == pytest.approx(0.02, rel=0.2)
    assert stds[1] == pytest.approx(0.5, rel=0.2)
