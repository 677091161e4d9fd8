"""Tests of ShapesDetector on renders, degraded renders and edge cases."""
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from uno.datasets.shapesworld import BACKGROUND, COLOR_RGB, ShapesWorld
from uno.evaluation import Detection, ShapesDetector
from uno.evaluation.shapes_detector import as_image, shape_templates
from uno.registry import EVALUATORS


@pytest.fixture(scope='module')
def detector():
    return ShapesDetector()


def _scenes(size, num=200, seed=0):
    world = ShapesWorld(image_size=size, seed=seed)
    return world, [world.scene(i, 'test') for i in range(num)]


def _labels(dets):
    return sorted((d.cls, d.color) for d in dets)


def _truth(scene):
    return sorted((o.shape, o.color) for o in scene.objects)


@pytest.mark.parametrize('size', [32, 64])
def test_renders_detected_exactly(detector, size):
    world, scenes = _scenes(size)
    for scene in scenes:
        dets = detector(world.render(scene))
        assert _labels(dets) == _truth(scene)
        boxes = sorted(d.box for d in dets)
        assert boxes == sorted(o.box(size) for o in scene.objects)
        masks = world.masks(scene)
        assert sorted(d.area for d in dets) == sorted(masks.sum((1, 2)))
        assert all(d.score == 1.0 for d in dets)
        # GenEval expects the most confident objects first
        assert [d.score for d in dets] == sorted((d.score for d in dets),
                                                 reverse=True)


def test_detection_fields(detector):
    world, scenes = _scenes(32, 1)
    det = detector(world.render(scenes[0]))[0]
    assert isinstance(det, Detection)
    x0, y0, x1, y1 = det.box
    assert det.center == ((x0 + x1) / 2, (y0 + y1) / 2)


def test_blank_and_background_jitter(detector):
    blank = np.full((32, 32, 3), BACKGROUND, np.uint8)
    assert detector(blank) == []
    world = ShapesWorld(image_size=32, bg_jitter=12, seed=3)
    for i in range(50):
        scene = world.scene(i, 'test')
        assert _labels(detector(world.render(scene))) == _truth(scene)


@pytest.mark.parametrize('size', [32, 64])
def test_noise_and_color_shift(detector, size):
    """Generations are never pixel-exact: noise and a global colour cast."""
    world, scenes = _scenes(size, 150)
    rng = np.random.default_rng(0)
    hits = 0
    for scene in scenes:
        img = world.render(scene).astype(np.float32)
        img += rng.normal(0, 10, img.shape) + rng.uniform(-20, 20, 3)
        img = np.clip(img, 0, 255).astype(np.uint8)
        hits += _labels(detector(img)) == _truth(scene)
    assert hits / len(scenes) >= 0.98


@pytest.mark.parametrize('size,target', [(32, 0.9), (64, 0.98)])
def test_antialiased_renders(detector, size, target):
    """Blurred, sub-pixel shapes (4x render, box-downsampled)."""
    world, scenes = _scenes(size, 150)
    hits = 0
    for scene in scenes:
        big = Image.fromarray(world.render(scene, size * 4))
        img = np.asarray(big.resize((size, size), Image.BOX))
        hits += _labels(detector(img)) == _truth(scene)
    print(f'antialiased {size} px: {hits / len(scenes):.3f}')
    assert hits / len(scenes) >= target


def test_small_specks_are_dropped(detector):
    img = np.full((32, 32, 3), BACKGROUND, np.uint8)
    img[5, 5] = COLOR_RGB['red']
    img[20:22, 20:22] = COLOR_RGB['blue']
    assert detector(img) == []
    assert len(ShapesDetector(min_area=0.001)(img)) == 1


def test_far_colors_are_not_objects(detector):
    img = np.full((32, 32, 3), BACKGROUND, np.uint8)
    img[8:20, 8:20] = (0, 0, 0)  # black is far from every palette colour
    assert detector(img) == []


def test_input_formats(detector):
    world, scenes = _scenes(32, 1)
    img = world.render(scenes[0])
    chw = torch.from_numpy(img).permute(2, 0, 1).float() / 255
    assert np.array_equal(as_image(chw), img)
    assert _labels(detector(chw)) == _labels(detector(img))


def test_templates_cached_and_registry():
    assert shape_templates(7, 7) is shape_templates(7, 7)
    assert shape_templates(7, 9).shape == (5, 7, 9)
    det = EVALUATORS.build(dict(type='ShapesDetector', color_tol=80))
    assert isinstance(det, ShapesDetector) and det.color_tol == 80
    with pytest.raises(ValueError):
        ShapesDetector(colors=('pink', ))


def test_color_subset_ignores_other_colors():
    world, scenes = _scenes(32, 100)
    det = ShapesDetector(colors=('red', 'blue'))
    for scene in scenes:
        found = Counter(d.color for d in det(world.render(scene)))
        assert set(found) <= {'red', 'blue'}
        assert found == Counter(
            o.color for o in scene.objects if o.color in ('red', 'blue'))
