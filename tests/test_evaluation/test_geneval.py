"""Tests of the GenEval metadata, GenEval's rules and GenEvalMetric."""
import json
from dataclasses import replace

import numpy as np
import pytest

from uno.datasets.shapesworld import BACKGROUND, COLORS, SHAPES, ShapesWorld
from uno.datasets.tokenizer import WordTokenizer
from uno.datasets.shapesworld.geneval_items import (GENEVAL_TAGS,
                                                    make_geneval_items,
                                                    make_geneval_metadata,
                                                    read_jsonl, write_jsonl)
from uno.evaluation import (Detection, GenEvalMetric, ShapesDetector,
                            evaluate_image, relative_position, summarize)
from uno.evaluation.geneval import group_detections
from uno.registry import EVALUATORS

N_PER_TAG = 84  # 504 entries per resolution


@pytest.fixture(scope='module')
def detector():
    return ShapesDetector()


@pytest.fixture(scope='module', params=[32, 64])
def bench(request):
    world = ShapesWorld(image_size=request.param, seed=0)
    return world, make_geneval_items(world, N_PER_TAG)


def _det(cls, box, color='red', score=1.0):
    x0, y0, x1, y1 = box
    return Detection(cls, color, box, ((x0 + x1) / 2, (y0 + y1) / 2),
                     (x1 - x0) * (y1 - y0), score)


def _few(items, per_tag=3):
    out, seen = [], {}
    for entry, scene in items:
        if seen.get(entry['tag'], 0) < per_tag:
            seen[entry['tag']] = seen.get(entry['tag'], 0) + 1
            out.append((entry, scene))
    return out


# --- metadata ----------------------------------------------------------------
def test_metadata_schema(bench):
    world, items = bench
    tok = WordTokenizer()
    assert [e['tag'] for e, _ in items
            ] == [t for t in GENEVAL_TAGS for _ in range(N_PER_TAG)]
    for entry, scene in items:
        assert list(entry)[0] == 'tag' and list(entry)[-1] == 'prompt'
        assert entry['prompt'] == world.prompt(scene)
        assert tok.unk_id not in tok.encode(entry['prompt'])
        assert world.split_of(scene.key) == 'test'
        inc, tag = entry['include'], entry['tag']
        assert all(r['class'] in SHAPES for r in inc)
        has_color = ['color' in r for r in inc]
        assert all(has_color) == (tag in ('colors', 'color_attr'))
        assert any(has_color) == (tag in ('colors', 'color_attr'))
        assert ('exclude' in entry) == (tag == 'counting')
        if tag == 'counting':
            assert entry['exclude'] == [
                dict(inc[0], count=inc[0]['count'] + 1)
            ]
            assert inc[0]['count'] == len(scene.objects) >= 2
        if tag == 'position':
            first, second = scene.objects
            assert inc == [{
                'class': second.shape,
                'count': 1
            }, {
                'class': first.shape,
                'count': 1,
                'position': [scene.relation, 0]
            }]
        if tag in ('single_object', 'colors'):
            assert len(scene.objects) == 1 and len(inc) == 1


def test_metadata_deterministic_and_jsonl(tmp_path):
    world = ShapesWorld(seed=0)
    a = make_geneval_metadata(world, 5, seed=1)
    assert a == make_geneval_metadata(ShapesWorld(seed=0), 5, seed=1)
    assert a != make_geneval_metadata(world, 5, seed=2)
    path = tmp_path / 'evaluation_metadata.jsonl'
    write_jsonl(a, str(path))
    assert read_jsonl(str(path)) == a
    assert len(path.read_text().splitlines()) == 6 * 5
    with pytest.raises(ValueError):
        make_geneval_metadata(ShapesWorld(max_objects=1), 2)


def test_make_geneval_metadata_tool(tmp_path, capsys):
    from tools.misc.make_geneval_metadata import main
    out = tmp_path / 'sub' / 'evaluation_metadata.jsonl'
    main(['--out', str(out), '--n-per-tag', '3', '--image-size', '64'])
    entries = read_jsonl(str(out))
    assert [e['tag'] for e in entries][::3] == list(GENEVAL_TAGS)
    assert 'wrote 18 entries' in capsys.readouterr().out


# --- ground truth, blank and wrong images ----------------------------------
def test_detector_accuracy_on_renders(bench, detector):
    world, items = bench
    results = []
    for entry, scene in items:
        correct, _ = evaluate_image(detector(world.render(scene)), entry)
        results.append(
            dict(tag=entry['tag'], correct=correct, prompt=entry['prompt']))
    summary = summarize(results)
    print(f'\n{world.image_size} px: ' + ', '.join(f'{t} {summary[t]:.3f}'
                                                   for t in GENEVAL_TAGS))
    for tag in GENEVAL_TAGS:
        assert summary[tag] >= 0.98, tag
        assert summary[f'{tag}/num_images'] == N_PER_TAG


def test_blank_image_scores_zero(bench, detector):
    world, items = bench
    size = world.image_size
    dets = detector(np.full((size, size, 3), BACKGROUND, np.uint8))
    results = [
        dict(tag=e['tag'], correct=evaluate_image(dets, e)[0])
        for e, _ in items
    ]
    summary = summarize(results)
    assert summary['overall'] == 0
    assert all(summary[t] == 0 for t in GENEVAL_TAGS)


def _other(value, options, avoid):
    return next(v for v in options if v not in avoid and v != value)


def test_wrong_image_scores_zero(bench, detector):
    """Every object re-drawn with a class and colour the prompt lacks."""
    world, items = bench
    for entry, scene in _few(items, 10):
        classes = {o.shape for o in scene.objects}
        colors = {o.color for o in scene.objects}
        objs = tuple(
            replace(
                o,
                shape=_other(o.shape, SHAPES, classes),
                color=_other(o.color, COLORS, colors)) for o in scene.objects)
        wrong = world.render(replace(scene, objects=objs))
        assert not evaluate_image(detector(wrong), entry)[0]


def test_wrong_color_fails_colors(bench, detector):
    world, items = bench
    for entry, scene in items:
        if entry['tag'] in ('colors', 'color_attr'):
            o = scene.objects[0]
            objs = (replace(o, color=_other(o.color, COLORS,
                                            ())), ) + scene.objects[1:]
            img = world.render(replace(scene, objects=objs))
            correct, reason = evaluate_image(detector(img), entry)
            assert not correct and f"expected {o.color} {o.shape}" in reason


def _free_copy(obj, others, size):
    """``obj`` moved where its box keeps 2 px from every other box."""
    for cx in np.linspace(0.1, 0.9, 17):
        for cy in np.linspace(0.1, 0.9, 17):
            cand = replace(obj, cx=float(cx), cy=float(cy))
            x0, y0, x1, y1 = cand.box(size)
            if min(x0, y0) < 1 or max(x1, y1) > size - 1:
                continue
            if all(a1 + 2 <= x0 or x1 + 2 <= a0 or b1 + 2 <= y0 or y1 + 2 <= b0
                   for a0, b0, a1, b1 in (o.box(size) for o in others)):
                return cand
    return None


def test_counting_extra_object_fails_via_exclude(bench, detector):
    world, items = bench
    tested = 0
    for entry, scene in items:
        if entry['tag'] != 'counting':
            continue
        extra = _free_copy(scene.objects[0], scene.objects, world.image_size)
        if extra is None:
            continue
        img = world.render(replace(scene, objects=scene.objects + (extra, )))
        correct, reason = evaluate_image(detector(img), entry)
        cls, n = entry['include'][0]['class'], entry['include'][0]['count']
        assert not correct
        assert reason == f'expected {cls}<{n + 1}, found {n + 1}'
        tested += 1
    assert tested >= N_PER_TAG // 2


def test_position_swapped_fails(bench, detector):
    world, items = bench
    for entry, scene in items:
        if entry['tag'] != 'position':
            continue
        a, b = scene.objects
        swapped = (replace(a, cx=b.cx, cy=b.cy), replace(b, cx=a.cx, cy=a.cy))
        img = world.render(replace(scene, objects=swapped))
        correct, reason = evaluate_image(detector(img), entry)
        assert not correct and 'target' in reason


# --- GenEval's rules on hand-built detections -------------------------------
def test_relative_position_rule():
    left, right = (0, 0, 10, 10), (20, 2, 30, 12)
    assert relative_position(left, right) == {'left of'}
    assert relative_position(right, left) == {'right of'}
    assert relative_position((0, 0, 10, 10), (0, 20, 10, 30)) == {'above'}
    assert relative_position((0, 0, 10, 10),
                             (20, 20, 30, 30)) == {'left of', 'above'}
    # centres 2 px apart: within 0.1 * (10 + 10) of each other
    assert relative_position((0, 0, 10, 10), (2, 0, 12, 10)) == set()
    assert relative_position((0, 0, 10, 10), (2, 0, 12, 10),
                             0.02) == {'left of'}


def test_thresholds_and_grouping():
    dets = [
        _det('circle', (0, 0, 5, 5), score=0.95),
        _det('circle', (10, 0, 15, 5), score=0.5),
        _det('circle', (20, 0, 25, 5), score=0.2),
        _det('circle', (11, 0, 16, 5), score=0.4),
    ]
    grouped = group_detections(dets, 'two_object')
    assert [d.score for d in grouped['circle']] == [0.95, 0.5, 0.4]
    assert len(group_detections(dets, 'counting')['circle']) == 1
    assert len(group_detections(dets, 'x', max_objects=2)['circle']) == 2
    nms = group_detections(dets, 'x', max_overlap=0.5)['circle']
    assert [d.score for d in nms] == [0.95, 0.5]
    counting = dict(
        tag='counting',
        include=[dict({'class': 'circle'}, count=1)],
        exclude=[dict({'class': 'circle'}, count=2)])
    assert evaluate_image(dets, counting)[0]  # only one is confident
    assert not evaluate_image(dets, dict(counting, tag='two_object'))[0]


def test_color_checked_on_most_confident_only():
    dets = [
        _det('circle', (0, 0, 5, 5), 'blue', 0.9),
        _det('circle', (10, 0, 15, 5), 'red', 0.8)
    ]
    meta = dict(
        tag='colors',
        include=[{
            'class': 'circle',
            'count': 1,
            'color': 'red'
        }])
    correct, reason = evaluate_image(dets, meta)
    assert not correct and reason.startswith('expected red circle>=1')


def test_position_needs_matched_target():
    meta = dict(
        tag='position',
        include=[{
            'class': 'square',
            'count': 1
        }, {
            'class': 'circle',
            'count': 1,
            'position': ['left of', 0]
        }])
    circle = _det('circle', (0, 0, 5, 5))
    correct, reason = evaluate_image([circle], meta)
    assert not correct
    assert reason.splitlines() == [
        'expected square>=1, found 0', 'no target for circle to be left of'
    ]
    square = _det('square', (20, 0, 25, 5))
    assert evaluate_image([circle, square], meta) == (True, '')


def test_summary_is_mean_over_tags():
    results = [dict(tag='a', correct=True, prompt='p')] + [
        dict(tag='b', correct=c, prompt=p)
        for c, p in [(False, 'q'), (False, 'q'), (True, 'r')]
    ]
    s = summarize(results)
    assert s['a'] == 1 and s['b'] == pytest.approx(1 / 3)
    assert s['overall'] == pytest.approx(2 / 3)
    assert s['correct_images'] == 0.5
    assert s['correct_prompts'] == pytest.approx(2 / 3)
    assert s['b/num_correct'] == 1 and s['b/num_images'] == 3
    assert s['num_images'] == 4


# --- the metric --------------------------------------------------------------
def test_geneval_metric(bench):
    world, items = bench
    items = _few(items, 2)
    blank = np.full((world.image_size, ) * 2 + (3, ), 255, np.uint8)
    metric = EVALUATORS.build(dict(type='GenEvalMetric'))
    samples = [dict(image=world.render(s), metadata=e) for e, s in items]
    samples[0] = dict(image=blank, metadata=json.dumps(items[0][0]))
    metric.process({}, samples)
    metrics = metric.evaluate(len(samples))
    assert metrics['geneval/overall'] == pytest.approx(1 - 0.5 / 6)
    assert metrics['geneval/single_object'] == 0.5
    assert all(metrics[f'geneval/{t}'] == 1 for t in GENEVAL_TAGS[1:])


def test_geneval_metric_detector_choices():
    calls = []

    def fake(image):
        calls.append(image.shape)
        return [_det('star', (0, 0, 4, 4), 'green')]

    meta = dict(
        tag='colors',
        prompt='a photo of a green star',
        include=[{
            'class': 'star',
            'count': 1,
            'color': 'green'
        }])
    image = np.zeros((8, 8, 3), np.uint8)
    metric = GenEvalMetric(detector=fake)
    metric.process({}, [dict(image=image, metadata=meta)])
    assert metric.evaluate(1)['geneval/colors'] == 1.0 and calls
    built = GenEvalMetric(detector=dict(type='ShapesDetector', color_tol=50))
    assert built.detector.color_tol == 50
    with pytest.raises(TypeError):
        GenEvalMetric(detector=3)
