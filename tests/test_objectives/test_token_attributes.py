"""Dense per-token attribute supervision of the understanding encoder."""
import numpy as np
import pytest
import torch

from uno.datasets import ShapesWorldCaptionDataset, pack_sequences
from uno.datasets.shapesworld import (TOKEN_ATTRIBUTES, ShapesWorld,
                                      token_attributes)
from uno.datasets.shapesworld.captions import pair_relation
from uno.datasets.shapesworld.scene import INVERSE_RELATION as INVERSE
from uno.datasets.tokenizer import WordTokenizer
from uno.objectives import ObjectiveSet, Prepared
from uno.registry import MODELS
from uno.errors import UnoConfigError

MODEL = dict(
    type='UnoModel',
    llm=dict(vocab_size=128, hidden_size=32, num_layers=1, num_heads=2,
             num_kv_heads=1, intermediate_size=64),
    latent_encoder=dict(type='PixelPatchifier', patch_size=4),
    und_encoder=dict(type='TimmViTEncoder', conv_stem=[8, 8, 16],
                     config=dict(img_size=32, patch_size=4, embed_dim=16,
                                 depth=1, num_heads=2)),
    attention=dict(type='sdpa'),
    freeze=dict(und_encoder=False))


def test_labels_follow_the_object_masks():
    world = ShapesWorld(seed=0)
    for index in range(20):
        scene = world.scene(index)
        labels = token_attributes(scene, 32, 4)  # (4, 64)
        masks = world.masks(scene).reshape(len(scene.objects), 8, 4, 8, 4)
        covered = masks.any((2, 4)).reshape(len(scene.objects), 64).any(0)
        assert ((labels[0] > 0) == covered).all()
        for obj in scene.objects:  # every object owns at least one token
            row = [1 + TOKEN_ATTRIBUTES[a].index(getattr(obj, a))
                   for a in ('shape', 'color', 'size')]
            assert (labels[:3].T == np.array(row)).all(1).any(), obj
        # the relation row: each object of a two-object scene relates to
        # the other (the caption states the first's), nothing elsewhere
        rel = labels[3][labels[0] > 0]
        if len(scene.objects) != 2:
            assert (rel == 0).all()
            continue
        first, second = (labels[3][labels[0] > 0][
            (labels[:3].T[labels[0] > 0] == np.array(
                [1 + TOKEN_ATTRIBUTES[a].index(getattr(obj, a))
                 for a in ('shape', 'color', 'size')])).all(1)]
            for obj in scene.objects)
        stated = pair_relation(scene)
        assert set(first.tolist()) == {
            1 + TOKEN_ATTRIBUTES['relation'].index(stated)}
        assert set(second.tolist()) == {
            1 + TOKEN_ATTRIBUTES['relation'].index(INVERSE[stated])}
    with pytest.raises(ValueError, match='multiple'):
        token_attributes(world.scene(0), 30, 4)


def _batch(n=3, stride=4, latent_fraction=0.0):
    ds = ShapesWorldCaptionDataset(tokenizer=WordTokenizer(vocab_size=128),
                                   token_labels=stride,
                                   latent_fraction=latent_fraction)
    return pack_sequences([ds[i] for i in range(n)], latent_stride=4,
                          vit_stride=4)


def test_loss_counts_tokens_and_trains_the_encoder():
    torch.manual_seed(0)
    model = MODELS.build(MODEL)
    objs = ObjectiveSet(dict(attr=dict(type='TokenAttributeObjective')))
    objs.setup(model)
    batch = _batch()
    prepared = objs.prepare(model, batch)
    total, logs = objs(model(batch), batch, prepared)
    assert logs['tokens/attr'] == 3 * 64 * 4  # samples x tokens x attrs
    assert 0 <= logs['acc_shape/attr'] <= 1
    total.backward()
    stem = model.und_encoder.model.patch_embed.proj[0].weight
    assert stem.grad is not None and stem.grad.abs().sum() > 0
    # a few steps on one batch fit it: the labels are learnable
    opt = torch.optim.Adam([p for p in model.parameters()] +
                           list(objs.parameters()), lr=1e-2)
    first = total.item()
    for _ in range(30):
        total, logs = objs(model(batch), batch, prepared)
        opt.zero_grad()
        total.backward()
        opt.step()
    assert total.item() < 0.5 * first


def test_samples_without_labels_are_skipped_and_wrong_stride_refused():
    model = MODELS.build(MODEL)
    objs = ObjectiveSet(dict(attr=dict(type='TokenAttributeObjective')))
    objs.setup(model)
    batch = _batch(n=2, latent_fraction=1.0)  # latent view: no ViT tokens
    _, logs = objs(model(batch), batch, Prepared())
    assert logs['tokens/attr'] == 0
    bad = _batch(n=1, stride=8)  # 16 labels for 64 tokens
    with pytest.raises(UnoConfigError, match='token_labels'):
        objs(model(bad), bad, Prepared())


def test_latent_view_supervises_the_gen_expert_and_the_latent_stem():
    torch.manual_seed(0)
    model = MODELS.build(dict(MODEL, latent_stem=dict(channels=[16])))
    objs = ObjectiveSet(dict(attr=dict(type='TokenAttributeObjective',
                                       view='latent', layer=1)))
    objs.setup(model)
    assert objs.requires_layers == (1, )
    batch = _batch(n=2, latent_fraction=1.0)  # both show clean latents
    prepared = objs.prepare(model, batch)
    total, logs = objs(model(batch, return_layers=(1, )), batch, prepared)
    assert logs['tokens/attr'] == 2 * 64 * 4
    total.backward()
    gen = model.decoder.layers[0].experts['gen']
    assert any(p.grad is not None and p.grad.abs().sum() > 0
               for p in gen.parameters())
    # the stem's zero-initialised output conv gets a gradient
    assert model.latent_stem.net[-1].weight.grad.abs().sum() > 0
    vit = _batch(n=2)  # ViT view only: nothing for the latent view
    _, logs = objs(model(vit, return_layers=(1, )), vit, Prepared())
    assert logs['tokens/attr'] == 0
    with pytest.raises(UnoConfigError, match='layer 3'):
        ObjectiveSet(dict(attr=dict(type='TokenAttributeObjective',
                                    view='latent', layer=3))).setup(model)


def _t2i_model_and_batch(n: int):
    """A tiny model and ``n`` text-to-image samples with token labels."""
    from uno.datasets import ShapesWorldT2IDataset
    torch.manual_seed(0)
    model = MODELS.build(MODEL)
    ds = ShapesWorldT2IDataset(tokenizer=WordTokenizer(vocab_size=128),
                               token_labels=4)
    return model, pack_sequences([ds[i] for i in range(n)], latent_stride=4)


def test_noisy_view_labels_text_to_image_targets_up_to_max_t():
    model, batch = _t2i_model_and_batch(4)
    counts = {}
    for max_t in (1.0, 0.5):
        objs = ObjectiveSet(dict(
            flow=dict(type='FlowMatchingObjective'),
            attr=dict(type='TokenAttributeObjective', view='noisy',
                      layer=1, max_t=max_t)))
        objs.setup(model)
        gen = torch.Generator().manual_seed(0)
        prepared = objs.prepare(model, batch, gen)
        total, logs = objs(model(batch, prepared.noisy, return_layers=(1, )),
                           batch, prepared)
        t = prepared.noisy.timesteps  # (4,)
        assert logs['tokens/attr'] == int((t <= max_t).sum()) * 64 * 4
        # the count without the model (gradient accumulation) agrees
        assert objs.step_counts([batch], [prepared])['attr'] == \
            logs['tokens/attr']
        counts[max_t] = logs['tokens/attr']
    assert counts[1.0] == 4 * 64 * 4 and counts[0.5] < counts[1.0]
    with pytest.raises(ValueError, match="'vit', 'latent' or 'noisy'"):
        ObjectiveSet(dict(attr=dict(type='TokenAttributeObjective',
                                    view='pixels')))


def test_attributes_subset_supervises_only_those():
    from uno.objectives.token_attributes import ATTRIBUTES
    model, batch = _t2i_model_and_batch(2)
    one = list(ATTRIBUTES)[0]
    results = {}
    for attrs in (tuple(ATTRIBUTES), (one, )):
        objs = ObjectiveSet(dict(
            flow=dict(type='FlowMatchingObjective'),
            attr=dict(type='TokenAttributeObjective', view='noisy',
                      layer=1, attributes=attrs)))
        objs.setup(model)
        attr = objs.objectives['attr']
        assert set(attr.heads) == set(attrs)
        prepared = objs.prepare(model, batch, torch.Generator().manual_seed(0))
        _, logs = objs(model(batch, prepared.noisy, return_layers=(1, )),
                       batch, prepared)
        assert logs['tokens/attr'] == 2 * 64 * len(attrs)
        results[len(attrs)] = {k for k in logs if 'acc_' in k}
    assert len(results[1]) == 1 and one in next(iter(results[1]))
    assert len(results[len(ATTRIBUTES)]) == len(ATTRIBUTES)
    with pytest.raises(ValueError, match='attributes'):
        ObjectiveSet(dict(attr=dict(type='TokenAttributeObjective',
                                    attributes=('weight', ))))
