"""Tests of the edit benchmark: satisfaction and preservation."""
import math
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from uno.datasets.shapesworld import EDIT_KINDS, ShapesWorld
from uno.evaluation import EditMetric, ShapesDetector, score_edit
from uno.evaluation.edit_bench import preserved_mask
from uno.registry import EVALUATORS


@pytest.fixture(scope='module')
def world():
    return ShapesWorld(image_size=32, seed=0)


@pytest.fixture(scope='module')
def pairs(world):
    return [world.edit(i, 'test') for i in range(120)]


@pytest.fixture(scope='module')
def detector():
    return ShapesDetector()


def test_ground_truth_target_satisfies(world, pairs, detector):
    kinds = Counter(p.kind for p in pairs)
    assert set(kinds) == set(EDIT_KINDS)
    for pair in pairs:
        res = score_edit(
            world.render(pair.source), world.render(pair.target), pair,
            detector)
        assert res['satisfied'], (pair.kind, pair.instruction)
        assert res['preserved_psnr'] == math.inf
        assert res['preserved_l1'] == 0


def test_unedited_source_is_not_satisfied(world, pairs, detector):
    for pair in pairs:
        source = world.render(pair.source)
        res = score_edit(source, source, pair, detector)
        assert not res['satisfied'], (pair.kind, pair.instruction)
        assert res['preserved_psnr'] == math.inf


def test_noise_outside_region_lowers_psnr(world, pairs, detector):
    rng = np.random.default_rng(0)
    for pair in pairs[:20]:
        source, target = (world.render(pair.source), world.render(pair.target))
        noise = rng.normal(0, 20, target.shape)
        noisy = np.clip(target + noise, 0, 255).astype(np.uint8)
        keep = preserved_mask(32, pair.region)
        inside = np.where(keep[..., None], target, noisy)
        outside = np.where(keep[..., None], noisy, target)
        assert score_edit(source, inside, pair,
                          detector)['preserved_psnr'] == math.inf
        res = score_edit(source, outside, pair, detector)
        assert 20 < res['preserved_psnr'] < 40
        assert 0 < res['preserved_l1'] < 0.1


def test_wrong_edits_fail(world, pairs, detector):
    for pair in pairs:
        source = world.render(pair.source)
        subj = pair.subject
        if pair.kind == 'recolor':  # recoloured to a third colour
            other = next(
                c for c in ('red', 'green', 'blue')
                if c not in (subj.color, pair.detail))
            objs = tuple(
                replace(o, color=other) if o == subj else o
                for o in pair.source.objects)
        elif pair.kind == 'move':  # moved the opposite way
            objs = tuple(
                replace(o, cx=2 * subj.cx - t.cx, cy=2 * subj.cy -
                        t.cy) if o == subj else o
                for o, t in zip(pair.source.objects, pair.target.objects))
        else:
            continue
        wrong = world.render(replace(pair.target, objects=objs))
        assert not score_edit(source, wrong, pair, detector)['satisfied']


def test_region_mask_and_resize(world, pairs):
    mask = preserved_mask(32, (10, 10, 15, 15), dilate=2)
    assert (~mask).sum() == 9 * 9
    assert preserved_mask(32, (10, 10, 15, 15), dilate=0).sum() == 1024 - 25
    pair = pairs[0]
    big = world.render(pair.target, 64)
    res = score_edit(world.render(pair.source), big, pair)
    assert res['satisfied']
    assert res['preserved_psnr'] > 20


def test_edit_metric(world, pairs):
    metric = EVALUATORS.build(dict(type='EditMetric'))
    samples = []
    for i, pair in enumerate(pairs[:40]):
        source = world.render(pair.source)
        output = world.render(pair.target) if i % 2 == 0 else source
        samples.append(dict(source=source, output=output, pair=pair))
    metric.process({}, samples)
    metrics = metric.evaluate(len(samples))
    kinds = sorted({p.kind for p in pairs[:40]})
    for kind in kinds:
        sat = [i % 2 == 0 for i, p in enumerate(pairs[:40]) if p.kind == kind]
        assert metrics[f'edit/{kind}/satisfied'] == pytest.approx(np.mean(sat))
        assert metrics[f'edit/{kind}/psnr'] == 60.0  # capped
    assert metrics['edit/satisfied'] == pytest.approx(
        np.mean([metrics[f'edit/{k}/satisfied'] for k in kinds]))
    assert metrics['edit/l1'] == 0 and metrics['edit/num_samples'] == 40
    assert isinstance(
        EditMetric(detector=dict(type='ShapesDetector')), EditMetric)
