"""VisualRegressionObjective: resampling, losses, refusal without queries."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.conftest import t2i_sample
from uno.structures.packing import pack_sequences
from uno.models.outputs import ModelOutputs
from uno.objectives import VisualRegressionObjective, resample_tokens
from uno.registry import MODELS
from uno.errors import UnoConfigError


def test_resample_pool_and_interpolate():
    grid = torch.arange(16.).reshape(1, 16, 1)  # 4x4 grid, one channel
    pooled = resample_tokens(grid, 4, 'pool')
    # mean of each 2x2 block of [[0..3],[4..7],[8..11],[12..15]]
    assert pooled.flatten().tolist() == [2.5, 4.5, 10.5, 12.5]
    assert resample_tokens(grid, 16, 'interpolate').flatten().tolist() == \
        grid.flatten().tolist()
    assert resample_tokens(grid, 3, 'pool').shape == (1, 3, 1)
    # as many queries as tokens: pooling is the identity, the same
    # targets as resample='none' (so mq64 equals mq64-nopool on the mini
    # model's 64 tokens)
    feats = torch.randn(2, 64, 8)
    assert torch.equal(resample_tokens(feats, 64, 'pool'),
                       resample_tokens(feats, 64, 'none'))


@pytest.mark.parametrize('loss', ['mse', 'cosine', 'smooth_l1'])
def test_closed_form_losses(loss):
    batch = pack_sequences([t2i_sample(num_queries=2)], latent_stride=4)
    obj = VisualRegressionObjective(loss=loss)
    obj.projector = nn.Identity()
    pred = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    target = torch.tensor([[[1.0, 1.0], [0.0, 1.0]]])  # (I=1, K=2, C=2)
    res = obj(ModelOutputs(hidden=torch.zeros(1), mq_hidden=pred), batch,
              state=target)
    if loss == 'mse':
        expected = (0 + 1) / 2 + (0 + 1) / 2
    elif loss == 'smooth_l1':
        expected = F.smooth_l1_loss(pred, target[0],
                                    reduction='none').mean(-1).sum().item()
    else:
        expected = (1 - 2**-0.5) + 0.0
    assert res.loss_sum.item() == pytest.approx(expected, rel=1e-6)
    assert res.count.item() == 2


def test_refuses_without_metaqueries(uno_model_cfg):
    model = MODELS.build(dict(uno_model_cfg, metaquery=dict(num_queries=0)))
    with pytest.raises(UnoConfigError, match='num_queries > 0'):
        VisualRegressionObjective().setup(model)
    # inactive (weight 0) it builds: ablations with K = 0 switch it off
    VisualRegressionObjective(weight=0).setup(model)


def test_targets_are_clean_image_features(uno_model_cfg):
    torch.manual_seed(0)
    model = MODELS.build(uno_model_cfg)
    batch = pack_sequences([t2i_sample(num_queries=4)], latent_stride=4)
    obj = VisualRegressionObjective()
    obj.setup(model)
    target = obj.prepare(model, batch)
    feats = model.und_encoder(batch.images[:1])  # (1, 4, C): 8x8 / 4
    torch.testing.assert_close(target, feats)


def test_no_resampling_needs_one_query_per_token():
    feats = torch.randn(2, 16, 8)
    assert resample_tokens(feats, 16, 'none') is feats
    with pytest.raises(UnoConfigError, match='num_queries=16'):
        resample_tokens(feats, 4, 'none')


def test_targets_after_the_connector(uno_model_cfg):
    """target_space='connector': the embeddings the und expert reads, and
    a projector to the model width."""
    torch.manual_seed(0)
    model = MODELS.build(uno_model_cfg)
    batch = pack_sequences([t2i_sample(num_queries=4)], latent_stride=4)
    obj = VisualRegressionObjective(target_space='connector',
                                    resample='none')
    obj.setup(model)
    target = obj.prepare(model, batch)
    expected = model.connector(model.und_encoder(batch.images[:1]))
    torch.testing.assert_close(target, expected)
    assert obj.projector[-1].out_features == model.cfg.hidden_size
    with pytest.raises(ValueError, match='target_space'):
        VisualRegressionObjective(target_space='vit')


def test_normalize_target_and_projector_hidden(uno_model_cfg):
    """normalize_target LayerNorms each target token (no affine);
    projector_hidden sets the projector's hidden width."""
    torch.manual_seed(0)
    model = MODELS.build(uno_model_cfg)
    batch = pack_sequences([t2i_sample(num_queries=4)], latent_stride=4)
    plain = VisualRegressionObjective()
    plain.setup(model)
    normed = VisualRegressionObjective(normalize_target=True,
                                       projector_hidden=7)
    normed.setup(model)
    raw, target = plain.prepare(model, batch), normed.prepare(model, batch)
    torch.testing.assert_close(target, F.layer_norm(raw, raw.shape[-1:]))
    assert not torch.allclose(target, raw)
    mean, var = target.mean(-1), target.var(-1, unbiased=False)
    torch.testing.assert_close(mean, torch.zeros_like(mean), atol=1e-5,
                               rtol=0)
    torch.testing.assert_close(var, torch.ones_like(var), atol=1e-3,
                               rtol=0)
    assert normed.projector[0].out_features == 7
    assert normed.projector[2].in_features == 7
    assert plain.projector[0].out_features == model.cfg.hidden_size


def test_see_caption_asks_the_plan_for_it():
    """see_caption=True reaches the UNO plan (queries_see_caption), which
    test_packing checks against the attention mask."""
    from uno.objectives import ObjectiveSet
    objs = dict(flow=dict(type='FlowMatchingObjective'),
                caption=dict(type='CaptioningObjective'),
                regression=dict(type='VisualRegressionObjective'))
    assert not ObjectiveSet.plan_options(objs)['queries_see_caption']
    objs['regression']['see_caption'] = True
    assert ObjectiveSet.plan_options(objs)['queries_see_caption']
