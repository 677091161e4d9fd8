"""RepaAlignmentObjective: closed form, gradients, config round trip."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from torch import nn

from projects.repa_align.repa_align import RepaAlignmentObjective
from tests.conftest import REPO, t2i_sample
from uno.structures.packing import pack_sequences
from uno.engine import UnoTrainer
from uno.models.outputs import ModelOutputs
from uno.utils.config_check import validate_config
from uno.errors import UnoConfigError

CONFIG = osp.join(REPO, 'projects/repa_align/configs/'
                  'repa_mot-tiny_1xb8-iter200_shapes.py')


def test_closed_form_cosine():
    batch = pack_sequences([t2i_sample(image_size=8)], latent_stride=4)
    obj = RepaAlignmentObjective(layer=1)
    obj.projector = nn.Identity()
    states = torch.zeros(batch.num_tokens, 2)
    states[batch.noisy_index] = torch.tensor([[1., 0.], [0., 1.],
                                              [1., 1.], [-1., 0.]])
    target = torch.tensor([[[1., 0.], [1., 0.], [1., 0.], [1., 0.]]])
    res = obj(ModelOutputs(hidden=states, layers={1: states}), batch,
              state=target)
    expected = 0 + 1 + (1 - 2**-0.5) + 2
    assert res.loss_sum.item() == pytest.approx(expected, rel=1e-6)
    assert res.count.item() == 4


def test_gradient_reaches_gen_expert_of_aligned_layer(uno_model_cfg):
    torch.manual_seed(0)
    trainer = UnoTrainer(model=uno_model_cfg, objectives=dict(
        flow=dict(type='FlowMatchingObjective', weight=0.0),
        repa=dict(type='RepaAlignmentObjective', layer=1)))
    batch = pack_sequences([t2i_sample(seed=i) for i in range(2)],
                           latent_stride=4)
    total, logs = trainer.compute_loss(batch)
    assert 'loss/repa' in logs
    total.backward()
    gen0 = trainer.model.decoder.layers[0].experts['gen'].mlp.up_proj
    gen1 = trainer.model.decoder.layers[1].experts['gen'].mlp.up_proj
    assert gen0.weight.grad.abs().sum() > 0
    assert gen1.weight.grad is None  # layer 2 is after the aligned output


def test_config_loads_registers_and_validates():
    cfg = Config.fromfile(CONFIG)
    validate_config(cfg)
    assert set(cfg.objectives) == {'flow', 'repa'}
    with pytest.raises(UnoConfigError, match='layers'):
        model = nn.Module()
        model.und_encoder = nn.Identity()
        model.cfg = type('C', (), dict(num_layers=2, hidden_size=4))
        RepaAlignmentObjective(layer=3).setup(model)
