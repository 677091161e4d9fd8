"""ObjectiveSet: explicit weighted sum, logs, micro-batch invariance."""
import pytest
import torch

from tests.conftest import UNO_OBJECTIVES, t2i_sample
from uno.structures.packing import pack_sequences
from uno.objectives import ObjectiveSet, Prepared
from uno.registry import MODELS
from uno.structures import NoisyLatents
from uno.errors import UnoConfigError


def _fixed_noise(model, batch, per_sample):
    """Flow inputs from per-sample (t, eps), independent of batching."""
    x0 = model.encode_latents(batch.images[batch.noisy_images]).flatten(0, 1)
    t = torch.stack([per_sample[m['index']][0] for m in batch.meta])
    eps = torch.cat([per_sample[m['index']][1] for m in batch.meta])
    tt = t[batch.noisy_group][:, None]
    return NoisyLatents((1 - tt) * x0 + tt * eps, t, clean=x0,
                        target=eps - x0)


def _loss(objs, model, plans, noise, counts=None):
    batch = pack_sequences(plans, latent_stride=4)
    noisy = _fixed_noise(model, batch, noise)
    prepared = Prepared(noisy, dict(
        regression=objs.objectives['regression'].prepare(model, batch)))
    return objs(model(batch, noisy), batch, prepared, counts=counts)


def test_total_is_weighted_sum_and_logs(uno_model_cfg):
    torch.manual_seed(0)
    model = MODELS.build(uno_model_cfg)
    cfg = {k: dict(v, weight=w) for (k, v), w in
           zip(UNO_OBJECTIVES.items(), (1.0, 0.5, 2.0))}
    objs = ObjectiveSet(cfg)
    objs.setup(model)
    plans = [t2i_sample(seed=i, caption_len=2, num_queries=4)
             for i in range(2)]
    noise = {i: (torch.rand(()), torch.randn(4, 48)) for i in range(2)}
    total, logs = _loss(objs, model, plans, noise)
    expected = (logs['loss/flow'] + 0.5 * logs['loss/caption'] +
                2.0 * logs['loss/regression'])
    torch.testing.assert_close(total.detach(), expected)
    assert logs['tokens/flow'] == 8 and logs['tokens/caption'] == 6
    assert logs['tokens/regression'] == 8
    assert logs['weight/caption'] == 0.5


def test_split_across_micro_batches_is_invariant(uno_model_cfg):
    """Summing micro-batch totals normalised by the global counts gives
    the full batch's total and gradients."""
    torch.manual_seed(0)
    model = MODELS.build(uno_model_cfg)
    torch.nn.init.normal_(model.llm2vae.weight, std=0.1)
    objs = ObjectiveSet(UNO_OBJECTIVES)
    objs.setup(model)
    plans = [t2i_sample(seed=i, prompt_len=2 + i, caption_len=1 + i % 3,
                        num_queries=4) for i in range(4)]
    noise = {i: (torch.rand(()), torch.randn(4, 48)) for i in range(4)}
    params = [p for p in model.parameters() if p.requires_grad]

    full, logs = _loss(objs, model, plans, noise)
    grads_full = torch.autograd.grad(full, params, allow_unused=True)
    counts = {k.split('/')[1]: v for k, v in logs.items()
              if k.startswith('tokens/')}
    parts = [_loss(objs, model, plans[:1], noise, counts)[0],
             _loss(objs, model, plans[1:], noise, counts)[0]]
    split = parts[0] + parts[1]
    grads_split = torch.autograd.grad(split, params, allow_unused=True)
    torch.testing.assert_close(split, full, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads_full, grads_split):
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_counts_without_the_model_match_forward(uno_model_cfg):
    """step_counts (gradient accumulation) sums what forward counts, also
    under timestep windows, where the count depends on the drawn t."""
    model = MODELS.build(uno_model_cfg)
    window = dict(timestep_window=(0.0, 0.5))
    objs = ObjectiveSet(dict(
        UNO_OBJECTIVES, caption=dict(UNO_OBJECTIVES['caption'], **window),
        regression=dict(UNO_OBJECTIVES['regression'], **window)))
    objs.setup(model)
    gen = torch.Generator().manual_seed(0)
    batches = [pack_sequences([t2i_sample(seed=i, caption_len=1 + 3 * i,
                                          num_queries=4) for i in part],
                              latent_stride=4) for part in ([0, 1], [2, 3])]
    prepared = [objs.prepare(model, b, gen) for b in batches]
    logs = [objs(model(b, p.noisy), b, p)[1]
            for b, p in zip(batches, prepared)]
    counts = objs.step_counts(batches, prepared)
    assert set(counts) == {'flow', 'caption', 'regression'}
    for name, count in counts.items():
        assert count == sum(log[f'tokens/{name}'] for log in logs), name
    t = torch.cat([p.noisy.timesteps for p in prepared])  # (4,)
    assert counts['regression'] == 4 * int((t <= 0.5).sum())


def test_empty_or_all_zero_is_an_error(uno_model_cfg):
    with pytest.raises(UnoConfigError, match='no objectives'):
        ObjectiveSet({})
    objs = ObjectiveSet(dict(flow=dict(type='FlowMatchingObjective',
                                       weight=0.0)))
    model = MODELS.build(uno_model_cfg)
    batch = pack_sequences([t2i_sample()], latent_stride=4)
    prepared = objs.prepare(model, batch)
    with pytest.raises(UnoConfigError, match='weight 0'):
        objs(model(batch, prepared.noisy), batch, prepared)


def test_plan_options_follow_active_objectives():
    opts = ObjectiveSet.plan_options(UNO_OBJECTIVES)
    assert opts == dict(caption=True, metaquery=True,
                        queries_see_caption=False)
    off = dict(UNO_OBJECTIVES, caption=dict(UNO_OBJECTIVES['caption'],
                                            weight=0))
    assert 'caption' not in ObjectiveSet.plan_options(off)


def _caption_plan(seed):
    """An image-to-caption sample: ViT view of a clean image, no noise."""
    from tests.conftest import BOS, EOS
    from uno.structures import Segment, SequencePlan
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(3, 8, 8, generator=g) * 2 - 1
    return SequencePlan([
        Segment('vit', image=0),
        Segment('caption', tokens=[BOS, 20 + seed, 21, EOS], sees=(0, ),
                loss=True)], images=[image], meta=dict(index=seed))


def test_batches_without_noisy_images_train(uno_model_cfg):
    """A caption-only batch under flow + caption: flow adds zero over zero
    tokens, the caption loss trains (no KeyError for the flow target)."""
    cfg = dict(uno_model_cfg, freeze=None)
    model = MODELS.build(cfg)
    objs = ObjectiveSet({k: UNO_OBJECTIVES[k] for k in ('flow', 'caption')})
    objs.setup(model)
    batch = pack_sequences([_caption_plan(i) for i in range(2)],
                           latent_stride=4, vit_stride=4)
    prepared = objs.prepare(model, batch)
    assert prepared.noisy is None
    total, logs = objs(model(batch), batch, prepared)
    assert logs['tokens/flow'] == 0 and logs['loss/flow'] == 0
    assert logs['tokens/caption'] == 6 and torch.isfinite(total)
    total.backward()
    assert model.lm_head.weight.grad.abs().sum() > 0


def test_unread_noisy_images_get_default_noise(uno_model_cfg):
    """Plain captioning validated on text-to-image data: the noisy images
    are embedded (default flow noise) instead of failing the run."""
    model = MODELS.build(uno_model_cfg)
    objs = ObjectiveSet(dict(caption=dict(type='CaptioningObjective',
                                          weight=1.0, noisy_captions=False)))
    batch = pack_sequences([t2i_sample(seed=i, caption_len=2)
                            for i in range(2)], latent_stride=4)
    prepared = objs.prepare(model, batch)
    assert prepared.noisy.latents.shape == (8, 48)
    total, _ = objs(model(batch, prepared.noisy), batch, prepared)
    assert torch.isfinite(total)
