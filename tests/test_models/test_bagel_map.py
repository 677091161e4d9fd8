"""BAGEL-7B-MoT checkpoint names <-> UnoModel names, and the 14B config.

The BAGEL key list is written out here from the names in
ByteDance-Seed/Bagel (``qwen2_navit.py``, ``bagel.py``,
``modeling_utils.py``, ``siglip_navit.py``), independently of the map.
"""
import math
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from safetensors.torch import save_file

from tests.conftest import REPO
from uno.models.external.bagel import (DERIVED, bagel_to_uno,
                                       check_pos_table, conv_to_linear_patch,
                                       linear_to_conv_patch,
                                       load_bagel_checkpoint, uno_to_bagel)
from uno.registry import MODELS
from uno.errors import UnoConfigError

VIT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
           num_attention_heads=4, image_size=16, patch_size=4)


def _tiny(seed=0, vit=True):
    torch.manual_seed(seed)
    cfg = dict(
        type='UnoModel',
        llm=dict(vocab_size=32, hidden_size=32, num_layers=2, num_heads=4,
                 num_kv_heads=2, intermediate_size=64, qk_norm=True),
        latent_encoder=dict(type='PixelPatchifier', patch_size=4),
        timestep_scale=1.0)
    if vit:
        cfg['und_encoder'] = dict(type='SiglipVisionEncoder', config=VIT,
                                  select_layer=-2, from_bagel=True)
    return MODELS.build(cfg)


def bagel_keys(num_layers=2, vit_layers=2):
    """BAGEL-MoT state-dict names (qk-norm on, SigLIP tower)."""
    lm = 'language_model.model.'
    keys = [lm + 'embed_tokens.weight', 'language_model.lm_head.weight']
    for gen in ('', '_moe_gen'):
        keys.append(f'{lm}norm{gen}.weight')
        for i in range(num_layers):
            p = f'{lm}layers.{i}.'
            for m in 'qkv':
                keys += [f'{p}self_attn.{m}_proj{gen}.weight',
                         f'{p}self_attn.{m}_proj{gen}.bias']
            keys += [f'{p}self_attn.o_proj{gen}.weight',
                     f'{p}self_attn.q_norm{gen}.weight',
                     f'{p}self_attn.k_norm{gen}.weight',
                     f'{p}input_layernorm{gen}.weight',
                     f'{p}post_attention_layernorm{gen}.weight']
            keys += [f'{p}mlp{gen}.{m}_proj.weight'
                     for m in ('gate', 'up', 'down')]
    wb = ('weight', 'bias')
    keys += [f'{m}.{w}' for m in ('time_embedder.mlp.0',
                                  'time_embedder.mlp.2', 'vae2llm',
                                  'llm2vae', 'connector.fc1',
                                  'connector.fc2') for w in wb]
    keys += list(DERIVED)
    v = 'vit_model.vision_model.'
    keys += [f'{v}embeddings.patch_embedding.{w}' for w in wb]
    keys += [f'{v}embeddings.position_embedding.weight']
    keys += [f'{v}post_layernorm.{w}' for w in wb]
    for i in range(vit_layers):
        p = f'{v}encoder.layers.{i}.'
        mods = ['self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj',
                'self_attn.out_proj', 'layer_norm1', 'layer_norm2',
                'mlp.fc1', 'mlp.fc2']
        keys += [f'{p}{m}.{w}' for m in mods for w in wb]
    return keys


def bagel_pos_table(side, dim):
    """BAGEL's fixed table, rebuilt from its definition: row ``r*S + c``
    is ``[sin(c w), cos(c w), sin(r w), cos(r w)]``, ``w_k =
    10000^(-k / (dim / 4))``."""
    w = 1.0 / 10000**(torch.arange(dim // 4, dtype=torch.float64) /
                      (dim / 4))
    idx = torch.arange(side * side)
    r, c = (idx // side).double(), (idx % side).double()
    parts = [torch.sin(c[:, None] * w), torch.cos(c[:, None] * w),
             torch.sin(r[:, None] * w), torch.cos(r[:, None] * w)]
    return torch.cat(parts, dim=1).float()


def _params(model):
    return {k for k, v in model.state_dict().items()
            if v.numel() and not k.startswith('latent_encoder.')}


@pytest.mark.parametrize('vit', [True, False])
def test_map_covers_every_uno_parameter(vit):
    model = _tiny(vit=vit)
    keys = bagel_keys() if vit else [
        k for k in bagel_keys() if not k.startswith(('vit_model', 'conn'))]
    keys += ['language_model.model.layers.0.self_attn.o_proj.bias',
             'encoder.conv_in.weight']
    mapped, unexpected = bagel_to_uno(keys)
    assert set(mapped) == _params(model)
    assert unexpected == keys[-2:]  # derived tables are not unexpected
    assert mapped['decoder.layers.1.experts.gen.mlp.up_proj.weight'] == (
        'language_model.model.layers.1.mlp_moe_gen.up_proj.weight')
    assert mapped.get('connector.2.bias', 'connector.fc2.bias') == (
        'connector.fc2.bias')
    assert mapped['decoder.norm.gen.weight'] == (
        'language_model.model.norm_moe_gen.weight')
    back, uno_only = uno_to_bagel(model.state_dict())
    assert set(back) == set(keys[:-2]) - set(DERIVED)
    if vit:
        patch = 'vit_model.vision_model.embeddings.patch_embedding.weight'
        assert back[patch].shape == (32, 4 * 4 * 3)  # BAGEL's Linear
    assert uno_only == ['metaquery.weight']  # (0, D): UNO's, not BAGEL's


def test_round_trip_and_patch_layout():
    model = _tiny()
    sd = model.state_dict()
    bagel, _ = uno_to_bagel(sd)
    patch = bagel['vit_model.vision_model.embeddings.patch_embedding.weight']
    assert patch.shape == (32, 4 * 4 * 3)  # BAGEL's Linear
    conv = sd['und_encoder.model.vision_model.embeddings.patch_embedding'
              '.weight']
    # BAGEL flattens a patch channels-last: (p, q, c)
    assert torch.equal(patch[:, 1 * 4 * 3 + 2 * 3 + 0], conv[:, 0, 1, 2])
    again, unexpected = bagel_to_uno(bagel)
    assert not unexpected and set(again) == set(sd) - {'metaquery.weight'}
    for k, v in again.items():
        assert torch.equal(v, sd[k]), k
    w = torch.randn(8, 14 * 14 * 3)
    assert torch.equal(conv_to_linear_patch(linear_to_conv_patch(w)), w)


def test_load_bagel_checkpoint(tmp_path):
    src, dst = _tiny(seed=0), _tiny(seed=1)
    bagel, _ = uno_to_bagel(src.state_dict())
    bagel = {k: v.contiguous() for k, v in bagel.items()}
    bagel['latent_pos_embed.pos_embed'] = bagel_pos_table(4, 32)
    bagel['vit_pos_embed.pos_embed'] = bagel_pos_table(4, 32)
    bagel['extra.weight'] = torch.zeros(2)
    save_file(bagel, str(tmp_path / 'ema.safetensors'))
    save_file({'encoder.conv_in.weight': torch.zeros(1)},
              str(tmp_path / 'ae.safetensors'))  # never read
    report = load_bagel_checkpoint(dst, str(tmp_path))
    assert report.unexpected == ['extra.weight'] and not report.missing
    assert sorted(report.derived) == sorted(DERIVED)
    assert not report.mismatched
    for k, v in src.state_dict().items():
        assert torch.equal(v, dst.state_dict()[k]), k
    text = str(report)
    assert 'derived, skipped (2)' in text and 'unexpected (1)' in text
    assert 'latent_pos_embed.pos_embed: derived' in text

    bagel['vae2llm.weight'] = torch.zeros(5, 5)
    save_file(bagel, str(tmp_path / 'bad.safetensors'))
    before = dst.vae2llm.bias.clone()
    with pytest.raises(UnoConfigError, match=r'vae2llm.weight model'):
        load_bagel_checkpoint(dst, str(tmp_path / 'bad.safetensors'),
                              strict=True)
    assert torch.equal(dst.vae2llm.bias, before)  # nothing was loaded


def test_pos_table_check():
    # uno's on-the-fly 2-D embedding equals BAGEL's fixed tables
    assert check_pos_table(bagel_pos_table(8, 64)) < 1e-6
    assert check_pos_table(bagel_pos_table(5, 3584)) < 1e-5
    from uno.models.embeddings import sincos_2d
    idx = torch.arange(64)
    ours = sincos_2d(torch.stack([idx // 8, idx % 8], 1), 64)
    assert check_pos_table(ours) == 0.0


def test_bagel_7b_mot_config_on_meta_device():
    cfg = Config.fromfile(
        osp.join(REPO, 'configs/_base_/models/bagel-7b-mot.py')).model
    cfg.latent_encoder.pretrained = None  # no VAE file in tests
    with torch.device('meta'):
        model = MODELS.build(cfg.to_dict())
    params = dict(model.named_parameters())
    assert all(p.is_meta for p in params.values())
    total = sum(p.numel() for p in params.values())
    llm = sum(p.numel() for k, p in params.items()
              if k.startswith(('decoder', 'embed_tokens', 'lm_head')))
    assert 14.0e9 < total < 15.0e9  # "7B active, 14B total"
    assert math.isclose(llm, 14.141e9, rel_tol=1e-3)
    shapes = {
        'embed_tokens.weight': (152064, 3584),
        'lm_head.weight': (152064, 3584),
        'decoder.layers.27.experts.gen.q_proj.bias': (3584, ),
        'decoder.layers.27.experts.gen.k_proj.weight': (512, 3584),
        'decoder.layers.0.experts.und.q_norm.weight': (128, ),
        'decoder.layers.0.experts.und.mlp.gate_proj.weight': (18944, 3584),
        'vae2llm.weight': (3584, 64),
        'llm2vae.weight': (64, 3584),
        'connector.0.weight': (3584, 1152),
        'und_encoder.model.vision_model.embeddings.position_embedding'
        '.weight': (4900, 1152),
    }
    for k, shape in shapes.items():
        assert tuple(params[k].shape) == shape, k
    vit = model.und_encoder.model.vision_model.encoder.layers
    assert len(vit) == 26  # BAGEL drops SigLIP's last layer
    bagel, uno_only = uno_to_bagel(params)
    assert all(k.startswith('latent_encoder.') or k == 'metaquery.weight'
               for k in uno_only)
    llm_keys = [k for k in bagel if k.startswith('language_model.')]
    assert len(llm_keys) == 28 * 28 + 4
