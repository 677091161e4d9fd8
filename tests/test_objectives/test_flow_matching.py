"""Flow matching: interpolation, target and the closed-form loss."""
import pytest
import torch

from tests.conftest import t2i_sample
from uno.structures.packing import pack_sequences
from uno.models.outputs import ModelOutputs
from uno.objectives import FlowMatchingObjective, ObjectiveSet
from uno.registry import MODELS
from uno.structures import NoisyLatents


@pytest.fixture
def model(tiny_model_cfg):
    torch.manual_seed(0)
    return MODELS.build(tiny_model_cfg)


def test_prepare_interpolates_per_image(model):
    batch = pack_sequences([t2i_sample(seed=0), t2i_sample(seed=1)],
                           latent_stride=4)
    obj = FlowMatchingObjective(timestep_sampler='uniform')
    noisy = obj.prepare(model, batch, torch.Generator().manual_seed(0))
    t = noisy.timesteps
    assert t.shape == (2, )
    x0 = noisy.clean
    eps = noisy.target + x0
    tt = t[batch.noisy_group][:, None]
    torch.testing.assert_close(noisy.latents, (1 - tt) * x0 + tt * eps)
    # x0 is the patchified image: token 1 of image 0 = its top-right patch
    torch.testing.assert_close(x0[1],
                               batch.images[0, :, :4, 4:8].reshape(-1))


def test_closed_form_loss():
    batch = pack_sequences([t2i_sample(image_size=4)], latent_stride=4)
    target = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    noisy = NoisyLatents(torch.zeros(1, 4), torch.ones(1), target=target)
    pred = torch.tensor([[0.0, 2.0, 1.0, 4.0]])
    res = FlowMatchingObjective()(ModelOutputs(
        hidden=torch.zeros(1), velocity=pred), batch, noisy)
    # mean over channels of (1, 0, 4, 0) = 1.25, one token
    assert res.loss_sum.item() == pytest.approx(1.25)
    assert res.count.item() == 1


def test_weight_zero_skips_loss_but_still_prepares(model):
    batch = pack_sequences([t2i_sample()], latent_stride=4)
    objs = ObjectiveSet(dict(
        flow=dict(type='FlowMatchingObjective', weight=0.0),
        also=dict(type='FlowMatchingObjective', weight=2.0)))
    calls = []
    objs.objectives['flow'].forward = lambda *a: calls.append(1)
    prepared = objs.prepare(model, batch)
    assert prepared.noisy.latents.shape[0] == batch.noisy_index.numel()
    total, logs = objs(model(batch, prepared.noisy), batch, prepared)
    assert calls == [] and 'loss/flow' not in logs
    assert logs['weight/flow'] == 0
    torch.testing.assert_close(total, 2.0 * logs['loss/also'])


def test_invalid_arguments():
    with pytest.raises(ValueError, match='timestep_sampler'):
        FlowMatchingObjective(timestep_sampler='beta')
    with pytest.raises(ValueError, match='shift'):
        FlowMatchingObjective(shift=0)
    with pytest.raises(ValueError, match='weight'):
        FlowMatchingObjective(weight=-1)


@pytest.mark.parametrize('seeded', [False, True])
def test_timestep_options_reach_the_drawn_timesteps(model, seeded):
    """loc, scale and shift (logit-normal) and the uniform sampler are the
    ones prepare() draws with, on both noise paths (a generator, or one
    seed per image)."""
    from uno.utils.timesteps import shift_timesteps
    batch = pack_sequences([t2i_sample(seed=0), t2i_sample(seed=1)],
                           latent_stride=4)
    seeds = [11, 12]

    def draw(**kw):
        obj = FlowMatchingObjective(**kw)
        if seeded:
            return obj.prepare(model, batch, noise_seeds=seeds).timesteps
        return obj.prepare(model, batch,
                           torch.Generator().manual_seed(0)).timesteps

    def first(fn):  # what each path draws first with fn, per image
        if seeded:
            return torch.stack([fn(
                1, generator=torch.Generator().manual_seed(s))[0]
                for s in seeds])
        return fn(2, generator=torch.Generator().manual_seed(0))

    z = first(torch.randn)
    t = draw(loc=1.0, scale=0.5, shift=3.0)
    expected = shift_timesteps(torch.sigmoid(z * 0.5 + 1.0), 3.0)
    torch.testing.assert_close(t, expected)
    base = draw()
    torch.testing.assert_close(base, torch.sigmoid(z))
    assert not torch.allclose(t, base)
    # uniform: the first draw is rand, not a sigmoid of a normal
    torch.testing.assert_close(draw(timestep_sampler='uniform'),
                               first(torch.rand))
