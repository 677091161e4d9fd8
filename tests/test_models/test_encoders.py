"""Encoders: the interface UnoModel relies on, local weights, inverses."""
import re

import pytest
import torch

from tests.conftest import BOS, EOS, VE, VS
from uno.structures.packing import pack_sequences
from uno.models.encoders import (AutoencoderKLEncoder, SiglipVisionEncoder,
                                 TimmViTEncoder)
from uno.models.encoders.vae import TINY_VAE_CONFIG
from uno.registry import ENCODERS, MODELS
from uno.structures import Segment, SequencePlan

VIT = dict(img_size=32, patch_size=4, embed_dim=64, depth=2, num_heads=4)
SIGLIP = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    image_size=16,
    patch_size=4)


def _images(n, size, seed=0, width=None):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, width or size, generator=g) * 2 - 1


def _build(cls, seed=0, **kw):
    torch.manual_seed(seed)
    return cls(**kw)


# --- TimmViTEncoder ---------------------------------------------------------
def test_timm_vit_shapes_and_no_prefix_tokens():
    enc = _build(TimmViTEncoder, config=VIT)
    assert (enc.feature_dim, enc.stride) == (64, 4)
    assert enc.model.num_prefix_tokens == 1  # a class token exists ...
    assert enc(_images(2, 32)).shape == (2, 64, 64)  # ... and is dropped
    # other sizes interpolate the position embedding
    assert enc(_images(1, 16, width=24)).shape == (1, 4 * 6, 64)


def test_timm_vit_select_layer_is_that_block_through_the_norm():
    full = _build(TimmViTEncoder, config=VIT)
    penult = _build(TimmViTEncoder, config=VIT, select_layer=-2)
    assert len(penult.model.blocks) == 1  # the unused block is pruned
    x = _images(2, 32)
    ref = full.model.forward_intermediates(
        x, indices=[0], norm=True, output_fmt='NLC',
        intermediates_only=True)[0]  # the inputs need no normalisation
    torch.testing.assert_close(penult(x), ref)
    assert not torch.allclose(penult(x), full(x))


def test_timm_vit_normalisation_is_configurable():
    a = _build(TimmViTEncoder, config=VIT, mean=(0, 0, 0), std=(1, 1, 1))
    b = _build(TimmViTEncoder, config=VIT, normalize=False)
    x = _images(1, 32)
    torch.testing.assert_close(a(x), b((x + 1) / 2))


def test_timm_vit_gradients_reach_every_parameter():
    enc = _build(TimmViTEncoder, config=VIT, select_layer=-2)
    enc(_images(2, 32)).square().mean().backward()
    assert all(p.grad is not None for p in enc.parameters())


@pytest.mark.parametrize('ext', ['safetensors', 'pth'])
def test_timm_vit_local_weights_round_trip(tmp_path, ext):
    src = _build(TimmViTEncoder, config=VIT)
    path = str(tmp_path / f'vit.{ext}')
    if ext == 'safetensors':
        from safetensors.torch import save_file
        save_file(src.model.state_dict(), path)
    else:
        torch.save(src.model.state_dict(), path)
    dst = _build(TimmViTEncoder, seed=1, config=VIT, pretrained=path)
    x = _images(2, 32)
    torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)


def test_timm_vit_by_name_builds_offline():
    enc = _build(
        TimmViTEncoder, model_name='vit_tiny_patch16_224', img_size=32)
    assert (enc.feature_dim, enc.stride) == (192, 16)
    assert enc(_images(1, 32)).shape == (1, 4, 192)


# --- SiglipVisionEncoder ----------------------------------------------------
def test_siglip_shapes_and_bagel_layer_path():
    enc = _build(SiglipVisionEncoder, config=SIGLIP)
    assert (enc.feature_dim, enc.stride) == (32, 4)
    assert len(enc.model.vision_model.encoder.layers) == 1  # select -2
    assert 'model.vision_model.post_layernorm.weight' in enc.state_dict()
    assert enc(_images(2, 16)).shape == (2, 16, 32)
    assert enc(_images(1, 8, width=12)).shape == (1, 6, 32)  # interpolated
    crop = _build(SiglipVisionEncoder, config=SIGLIP, from_bagel=True)
    assert crop(_images(1, 8, width=12)).shape == (1, 6, 32)


def test_siglip_matches_transformers_and_loads_a_local_folder(tmp_path):
    from transformers import SiglipVisionConfig, SiglipVisionModel
    torch.manual_seed(0)
    ref = SiglipVisionModel(SiglipVisionConfig(**SIGLIP)).eval()
    ref.save_pretrained(tmp_path)
    x = _images(2, 16)
    with torch.no_grad():
        hidden = ref(x, output_hidden_states=True).hidden_states
        want = ref.post_layernorm(hidden[-2])
    for seed in (1, 2):  # two loads, both equal the reference
        enc = _build(SiglipVisionEncoder, seed=seed, pretrained=tmp_path)
        torch.testing.assert_close(enc(x), want)
    last = SiglipVisionEncoder(
        pretrained=tmp_path, select_layer=-1, use_post_layernorm=False)
    torch.testing.assert_close(last(x), hidden[-1])


def test_siglip_takes_bagel_linear_patch_weights_and_crop_ids():
    src = _build(SiglipVisionEncoder, config=SIGLIP, from_bagel=True)
    state = src.state_dict()
    key = 'model.vision_model.embeddings.patch_embedding.weight'
    conv = state[key]  # (D, c, p, q)
    state[key] = conv.permute(0, 2, 3, 1).reshape(conv.shape[0], -1)
    dst = _build(SiglipVisionEncoder, seed=1, config=SIGLIP, from_bagel=True)
    dst.load_state_dict(state)
    x = _images(2, 16)
    torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)
    # crop ids: an 8x12 image reads table rows 0-1, columns 0-2 of 4x4
    small = _images(1, 8, width=12)
    table = src.model.vision_model.embeddings.position_embedding.weight
    patches = src.model.vision_model.embeddings.patch_embedding(small)
    want = patches.flatten(2).transpose(1, 2) + table[[0, 1, 2, 4, 5, 6]]
    torch.testing.assert_close(src.embed(small), want)


# --- AutoencoderKLEncoder ---------------------------------------------------
def test_vae_encode_decode_shapes_and_batch_invariance():
    enc = _build(AutoencoderKLEncoder, config='tiny')
    assert (enc.latent_dim, enc.stride) == (16, 4)
    x = _images(3, 16)
    tokens = enc.encode(x)
    assert tokens.shape == (3, 16, 16) and not tokens.requires_grad
    assert enc.decode(tokens, (4, 4)).shape == (3, 3, 16, 16)
    one_by_one = torch.cat([enc.encode(x[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(tokens, one_by_one)


def test_vae_scale_shift_and_bagel_token_order():
    enc = _build(
        AutoencoderKLEncoder,
        config=TINY_VAE_CONFIG,
        scaling_factor=0.5,
        shift_factor=0.1)
    x = _images(1, 16)
    with torch.no_grad():
        z = enc.vae.encode(x).latent_dist.mean[0]  # (C, 8, 8)
        z = (z - 0.1) * 0.5
        want = torch.einsum('chpwq->hwpqc', z.reshape(4, 4, 2, 4, 2))
        torch.testing.assert_close(enc.encode(x)[0], want.reshape(16, 16))
        tokens = enc.encode(x)
        img = enc.vae.decode(enc.unpatchify(tokens, (4, 4)) / 0.5 + 0.1).sample
        torch.testing.assert_close(enc.decode(tokens, (4, 4)), img)
    sampled = _build(
        AutoencoderKLEncoder, config='tiny', sample_posterior=True)
    assert not torch.equal(sampled.encode(x), sampled.encode(x))


def test_vae_patchify_unpatchify_are_exact_inverses():
    enc = AutoencoderKLEncoder(config='tiny', patch_size=2)
    z = torch.randn(2, 4, 6, 10)
    tokens = enc.patchify(z)
    assert tokens.shape == (2, 15, 16)
    assert torch.equal(enc.unpatchify(tokens, (3, 5)), z)
    assert torch.equal(enc.patchify(enc.unpatchify(tokens, (3, 5))), tokens)


def test_vae_loads_a_diffusers_folder(tmp_path):
    src = _build(AutoencoderKLEncoder, config='tiny')
    src.vae.save_pretrained(tmp_path / 'vae')  # a pipeline-style folder
    x = _images(2, 16)
    for path in (tmp_path / 'vae', tmp_path):
        dst = _build(AutoencoderKLEncoder, seed=1, pretrained=str(path))
        torch.testing.assert_close(
            dst.encode(x), src.encode(x), rtol=0, atol=0)


def _to_ldm_names(state, n_blocks):
    """Diffusers VAE names -> LDM/BFL names (those of FLUX's ae file)."""
    out = {}
    for k, v in state.items():
        k = re.sub(r'^encoder\.down_blocks\.(\d+)\.resnets\.',
                   r'encoder.down.\1.block.', k)
        k = re.sub(r'^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.',
                   r'encoder.down.\1.downsample.', k)
        k = re.sub(
            r'^decoder\.up_blocks\.(\d+)\.(resnets|upsamplers\.0)\.',
            lambda m: f'decoder.up.{n_blocks - 1 - int(m[1])}.' +
            ('block.' if m[2] == 'resnets' else 'upsample.'), k)
        k = re.sub(r'\.mid_block\.resnets\.(\d+)\.',
                   lambda m: f'.mid.block_{int(m[1]) + 1}.', k)
        if '.mid_block.attentions.0.' in k:
            k = k.replace('.mid_block.attentions.0.', '.mid.attn_1.')
            for a, b in (('group_norm', 'norm'), ('to_q', 'q'), ('to_k', 'k'),
                         ('to_v', 'v'), ('to_out.0', 'proj_out')):
                k = k.replace(f'attn_1.{a}.', f'attn_1.{b}.')
            v = v[:, :, None, None] if v.dim() == 2 else v  # 1x1 convs
        k = k.replace('conv_shortcut', 'nin_shortcut')
        out[k.replace('conv_norm_out', 'norm_out')] = v
    return out


def test_vae_loads_a_single_file_with_flux_names(tmp_path):
    from safetensors.torch import save_file
    cfg = dict(
        TINY_VAE_CONFIG, use_quant_conv=False,
        use_post_quant_conv=False)  # as FLUX
    src = _build(AutoencoderKLEncoder, config=cfg)
    path = str(tmp_path / 'ae.safetensors')
    save_file(_to_ldm_names(src.vae.state_dict(), 2), path)
    dst = _build(AutoencoderKLEncoder, seed=1, config=cfg, pretrained=path)
    x = _images(2, 16)
    torch.testing.assert_close(dst.encode(x), src.encode(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match='single weights file'):
        AutoencoderKLEncoder(pretrained=path)


# --- shared -----------------------------------------------------------------
@pytest.mark.parametrize('cfg', [
    dict(type='TimmViTEncoder', config=VIT),
    dict(type='SiglipVisionEncoder', config=SIGLIP),
    dict(type='AutoencoderKLEncoder', config='tiny'),
])
def test_registry_build_and_missing_pretrained(cfg, tmp_path):
    enc = ENCODERS.build(cfg)
    assert type(enc).__name__ == cfg['type']
    missing = str(tmp_path / 'no_such_weights')
    with pytest.raises(FileNotFoundError, match='no_such_weights'):
        ENCODERS.build(dict(cfg, pretrained=missing))


def _vit_plan(image):
    segs = [
        Segment('text', tokens=[BOS, 10, 11, EOS]),
        Segment('vit', image=0, markers=(VS, VE)),
        Segment('text', tokens=[BOS, 12, EOS]),
    ]
    return SequencePlan(segs, images=[image])


def test_uno_model_embeds_vit_segments(tiny_model_cfg):
    torch.manual_seed(0)
    vit = dict(img_size=8, patch_size=4, embed_dim=16, depth=1, num_heads=2)
    model = MODELS.build(
        dict(
            tiny_model_cfg,
            und_encoder=dict(type='TimmViTEncoder', config=vit)))
    outs = []
    for seed in (0, 1):
        batch = pack_sequences([_vit_plan(_images(1, 8, seed)[0])],
                               latent_stride=4,
                               vit_stride=4)
        assert batch.vit_index.numel() == 4
        with torch.no_grad():
            outs.append((model(batch).hidden, batch))
    (h0, batch), (h1, _) = outs
    assert not torch.allclose(h0[batch.vit_index], h1[batch.vit_index])
    prompt = batch.segment_ids == 0  # before the image: unaffected
    torch.testing.assert_close(h0[prompt], h1[prompt])


def test_vit_conv_stem_keeps_the_token_grid():
    import pytest

    from uno.models.encoders import TimmViTEncoder
    cfg = dict(img_size=32, patch_size=4, embed_dim=16, depth=1, num_heads=2)
    enc = TimmViTEncoder(config=cfg, conv_stem=[8, 8, 16])
    out = enc(torch.rand(2, 3, 32, 32) * 2 - 1)
    assert out.shape == (2, 64, 16) and enc.stride == 4
    out.sum().backward()
    assert enc.model.patch_embed.proj[0].weight.grad is not None
    with pytest.raises(ValueError, match='log2'):
        TimmViTEncoder(config=cfg, conv_stem=[8, 16])
