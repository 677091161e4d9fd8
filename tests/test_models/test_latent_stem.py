"""LatentGridStem: convolutions over each image's latent token grid."""
import pytest
import torch

from uno.models.embeddings import LatentGridStem
from uno.registry import MODELS

MODEL = dict(
    type='UnoModel',
    llm=dict(vocab_size=64, hidden_size=32, num_layers=1, num_heads=2,
             num_kv_heads=1, intermediate_size=64),
    latent_encoder=dict(type='PixelPatchifier', patch_size=4),
    attention=dict(type='sdpa'))


def _grid(images=2, side=4):
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side),
                                indexing='ij')
    pos = torch.stack([rows.flatten(), cols.flatten()], 1).repeat(images, 1)
    group = torch.arange(images).repeat_interleave(side * side)
    return group, pos  # (N,), (N, 2)


def test_stem_starts_at_zero_and_sees_neighbours_but_not_other_images():
    torch.manual_seed(0)
    stem = LatentGridStem(6, 8, channels=[5])
    group, pos = _grid()
    x = torch.randn(group.numel(), 6)
    assert stem(x, group, pos).abs().max() == 0  # zero at init
    torch.nn.init.normal_(stem.net[-1].weight)
    out = stem(x, group, pos)  # (32, 8)
    y = x.clone()
    y[5] += 1.0  # image 0, row 1, col 1
    moved = (stem(y, group, pos) - out).abs().sum(1) > 0  # (32,)
    near = (group == 0) & ((pos - pos[5]).abs().max(1).values <= 1)
    assert torch.equal(moved, near)  # its 3x3 neighbourhood, same image
    # token order does not matter: the grid is rebuilt from positions
    perm = torch.randperm(group.numel())
    assert torch.allclose(stem(x[perm], group[perm], pos[perm]), out[perm],
                          atol=1e-6)
    with pytest.raises(ValueError, match='odd kernel'):
        LatentGridStem(6, 8, channels=[5], kernel=2)


def test_model_with_a_stem_loads_a_checkpoint_without_one_unchanged():
    torch.manual_seed(0)
    plain = MODELS.build(MODEL)
    stemmed = MODELS.build(dict(MODEL, latent_stem=dict(channels=[16])))
    missing, unexpected = stemmed.load_state_dict(plain.state_dict(),
                                                  strict=False)
    assert all(k.startswith('latent_stem.') for k in missing) and missing
    assert not unexpected
    group, pos = _grid()
    lat = torch.randn(group.numel(), 48)
    t = torch.rand(group.numel())
    assert torch.equal(plain.latent_inputs(lat, t, pos, group),
                       stemmed.latent_inputs(lat, t, pos, group))
    frozen = dict(latent_io=True)
    stemmed.apply_freeze(frozen)
    assert not any(p.requires_grad for p in stemmed.latent_stem.parameters())
