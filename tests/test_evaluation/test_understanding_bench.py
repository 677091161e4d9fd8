"""Tests of the understanding benchmark: caption parsing and scoring."""
import math

import pytest

from uno.datasets.shapesworld import ShapesWorld
from uno.evaluation import UnderstandingMetric, parse_caption, score_caption
from uno.evaluation.understanding_bench import Phrase, parse_relation
from uno.registry import EVALUATORS


@pytest.mark.parametrize('sizes', [('small', 'large'), ('small', )])
def test_every_phrasing_parses_back(sizes):
    world = ShapesWorld(image_size=32, seed=0, sizes=sizes)
    for i in range(300):
        scene = world.scene(i, 'test')
        for text in world.captions(scene) + [world.prompt(scene)]:
            res = score_caption(text, scene, with_size=world.with_size)
            assert res['exact'] == 1, text
            assert res['objects_f1'] == res['color_acc'] == 1
            assert res['count_acc'] == res['shape_acc'] == 1
            assert res['relation_acc'] in (None, 1.0)
            assert (res['relation_acc'] is None) == (scene.relation is None)


def test_parse_examples():
    assert parse_caption('there are two small red circles and a large '
                         'blue square on a light background.') == [
                             Phrase(2, 'small', 'red', 'circle'),
                             Phrase(1, 'large', 'blue', 'square')
                         ]
    assert parse_caption('an image showing a single star coloured '
                         'orange.') == [Phrase(1, None, 'orange', 'star')]
    assert parse_caption('a picture with three shapes, three green '
                         'diamonds.') == [Phrase(3, None, 'green', 'diamond')]
    a, rel, b = parse_relation('there is a red circle to the left of a '
                               'blue star.')
    assert (a.shape, rel, b.shape) == ('circle', 'left of', 'star')
    # broken generations: stutter, unknown words, dangling attributes
    assert parse_caption('a red circle circle <unk> and blue squares '
                         'squares, three purple') == [
                             Phrase(1, None, 'red', 'circle'),
                             Phrase(2, None, 'blue', 'square')
                         ]
    assert parse_caption('') == []


@pytest.fixture(scope='module')
def world():
    return ShapesWorld(image_size=32, seed=0)


def _scene(world, tag):
    return next(
        s for s in (world.scene(i, 'test') for i in range(200))
        if s.tag == tag)


def test_wrong_attributes_lose_accuracy(world):
    scene = _scene(world, 'color_attr')
    a, b = scene.objects
    other = next(
        c for c in ('red', 'green', 'blue') if c not in (a.color, b.color))
    text = world.prompt(scene).replace(f' {a.color} ', f' {other} ', 1)
    res = score_caption(text, scene)
    assert res['color_acc'] == 0.5 and res['shape_acc'] == 1
    assert res['exact'] == 0 and res['objects_f1'] == 0.5
    missing = score_caption(f'a {a.size} {a.color} {a.shape}.', scene)
    assert missing['objects_f1'] == pytest.approx(2 / 3)
    assert missing['color_acc'] == 0.5 and missing['count_acc'] == 0.5


def test_wrong_count_and_relation(world):
    # three or more: a two-object caption states a relation, not a count
    scene = next(s for s in (world.scene(i, 'test') for i in range(200))
                 if s.tag == 'counting' and len(s.objects) >= 3)
    n = len(scene.objects)
    words = ('one', 'two', 'three', 'four', 'five')
    text = world.captions(scene)[4].replace(words[n - 1], words[n], 1)
    res = score_caption(text, scene)
    assert res['count_acc'] == 0 and res['exact'] == 0
    assert res['color_acc'] == 1
    scene = _scene(world, 'position')
    inverse = {
        'left of': 'right of',
        'right of': 'left of',
        'above': 'below',
        'below': 'above'
    }
    text = world.prompt(scene).replace(scene.relation, inverse[scene.relation])
    res = score_caption(text, scene)
    assert res['relation_acc'] == 0 and res['exact'] == 0
    assert res['objects_f1'] == 1


def test_understanding_metric(world):
    metric = EVALUATORS.build(dict(type='UnderstandingMetric'))
    scenes = [world.scene(i, 'test') for i in range(10)]
    samples = [
        dict(caption=world.caption(s, i), scene=s, nll=2.0 * 4, num_tokens=4)
        for i, s in enumerate(scenes)
    ]
    samples[0]['caption'] = 'nothing here'
    metric.process({}, samples)
    m = metric.evaluate(len(samples))
    assert m['understanding/exact'] == pytest.approx(0.9)
    assert m['understanding/attr_acc'] == pytest.approx(0.9)
    assert m['understanding/perplexity'] == pytest.approx(math.exp(2.0))
    assert m['understanding/num_samples'] == 10
    plain = UnderstandingMetric()
    plain.process({}, [dict(caption=world.prompt(scenes[1]), scene=scenes[1])])
    assert 'understanding/perplexity' not in plain.evaluate(1)
