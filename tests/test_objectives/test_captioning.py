"""CaptioningObjective: closed form, timestep window, weight 0."""
import math

import pytest
import torch

from tests.conftest import t2i_sample
from uno.structures.packing import pack_sequences
from uno.models.outputs import ModelOutputs
from uno.objectives import CaptioningObjective
from uno.structures import NoisyLatents


def _batch():
    return pack_sequences([t2i_sample(seed=0, caption_len=1),
                           t2i_sample(seed=1, caption_len=2)],
                          latent_stride=4)


def test_closed_form_ce():
    batch = _batch()  # CE tokens: 2 of sample 0, 3 of sample 1
    n, vocab = batch.ce_labels.numel(), 32
    assert n == 5
    logits = torch.zeros(n, vocab)
    logits[0, batch.ce_labels[0]] = math.log(3.0)  # p = 3 / (31 + 3)
    res = CaptioningObjective()(ModelOutputs(hidden=torch.zeros(1),
                                             ce_logits=logits), batch)
    expected = -math.log(3 / 34) + 4 * math.log(32)
    assert res.loss_sum.item() == pytest.approx(expected, rel=1e-6)
    assert res.count.item() == 5
    assert res.item_sample.tolist() == [0, 0, 1, 1, 1]


def test_timestep_window_keeps_only_samples_inside():
    batch = _batch()
    noisy = NoisyLatents(torch.zeros(batch.noisy_index.numel(), 1),
                         torch.tensor([0.2, 0.9]))
    logits = torch.zeros(5, 32)
    out = ModelOutputs(hidden=torch.zeros(1), ce_logits=logits)
    res = CaptioningObjective(timestep_window=(0.5, 1.0))(out, batch, noisy)
    assert res.count.item() == 3  # only sample 1 (t = 0.9)
    assert res.loss_sum.item() == pytest.approx(3 * math.log(32), rel=1e-6)
    with pytest.raises(ValueError, match='timestep_window'):
        CaptioningObjective(timestep_window=(0.8, 0.2))


def test_label_smoothing_closed_form():
    """label_smoothing=eps: CE against (1 - eps) one-hot + eps / V."""
    batch = _batch()
    n, vocab, eps = batch.ce_labels.numel(), 32, 0.2
    logits = torch.zeros(n, vocab)
    logits[torch.arange(n), batch.ce_labels] = 2.0
    out = ModelOutputs(hidden=torch.zeros(1), ce_logits=logits)
    logz = math.log(31 + math.exp(2.0))
    nll_true, nll_other = logz - 2.0, logz  # per token
    mean_nll = (nll_true + 31 * nll_other) / vocab
    expected = n * ((1 - eps) * nll_true + eps * mean_nll)
    res = CaptioningObjective(label_smoothing=eps)(out, batch)
    assert res.loss_sum.item() == pytest.approx(expected, rel=1e-6)
    plain = CaptioningObjective()(out, batch)
    assert plain.loss_sum.item() == pytest.approx(n * nll_true, rel=1e-6)
