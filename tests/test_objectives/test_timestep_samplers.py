"""Timestep distributions against their closed forms."""
import math

import pytest
import torch

from uno.objectives.timestep_samplers import (sample_timesteps,
                                              shift_timesteps)


def test_shift_closed_form():
    t = torch.tensor([0.0, 0.25, 0.5, 1.0])
    s = 3.0
    expected = torch.tensor([0.0, 0.75 / 1.5, 1.5 / 2.0, 1.0])
    torch.testing.assert_close(shift_timesteps(t, s), expected)
    assert torch.equal(shift_timesteps(t, 1.0), t)


def test_logit_normal_quantiles():
    g = torch.Generator().manual_seed(0)
    t = sample_timesteps(200000, 'logit_normal', generator=g)
    assert 0 < t.min() and t.max() < 1
    # median of sigmoid(N(0, 1)) is 0.5; P(t < sigmoid(1)) = Phi(1)
    assert abs(t.median().item() - 0.5) < 0.01
    frac = (t < 1 / (1 + math.exp(-1))).float().mean().item()
    assert abs(frac - 0.8413) < 0.01


def test_uniform_and_shifted_mean():
    g = torch.Generator().manual_seed(0)
    t = sample_timesteps(200000, 'uniform', shift=3.0, generator=g)
    # E[3u / (1 + 2u)] for u ~ U(0, 1) = 3/2 - 3 ln(3) / 4
    assert abs(t.mean().item() - (1.5 - 0.75 * math.log(3))) < 0.005


def test_unknown_sampler():
    with pytest.raises(ValueError, match='logit_normal'):
        sample_timesteps(3, 'cosine')
