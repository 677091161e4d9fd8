"""Image transforms: stride-multiple sizes, crops, flips, tensors, pipeline."""
import numpy as np
import pytest
import torch
from PIL import Image

from uno.datasets.transforms import (CenterCrop, Pipeline, RandomCrop,
                                     RandomHorizontalFlip, ResizeToStride,
                                     ToTensorImage, build_pipeline)
from uno.registry import TRANSFORMS


def _array(h, w, seed=0):
    return np.random.default_rng(seed).integers(
        0, 256, size=(h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize('hw', [(100, 50), (50, 100), (37, 61), (300, 300),
                                (17, 200), (8, 8)])
@pytest.mark.parametrize('as_pil', [False, True])
def test_resize_to_stride_sizes(hw, as_pil):
    t = ResizeToStride(max_size=64, min_size=16, stride=8)
    image = _array(*hw)
    if as_pil:
        image = Image.fromarray(image)
    out = t(dict(image=image))['image']
    assert isinstance(out, Image.Image) == as_pil
    h, w = (out.height, out.width) if as_pil else out.shape[:2]
    assert h % 8 == 0 and w % 8 == 0
    assert 8 <= h <= 64 and 8 <= w <= 64
    # the aspect ratio survives up to rounding (and the clamp at max_size)
    if max(hw) / min(hw) <= 64 / 16:
        ratio = (hw[0] / hw[1]) / (h / w)
        assert 0.7 < ratio < 1.4


def test_resize_to_stride_rules():
    t = ResizeToStride(max_size=64, min_size=32, stride=16)
    assert t.output_size(100, 50) == (64, 32)  # shrink the long side
    assert t.output_size(20, 40) == (32, 64)  # enlarge the short side
    assert t.output_size(48, 48) == (48, 48)  # in range: kept
    assert ResizeToStride(64, stride=16).output_size(20, 20) == (16, 16)
    with pytest.raises(ValueError):
        ResizeToStride(max_size=8, stride=16)
    with pytest.raises(ValueError):
        ResizeToStride(max_size=32, min_size=64, stride=16)


def test_resize_pairs_get_the_first_images_size():
    t = ResizeToStride(max_size=32, stride=4)
    res = t(dict(image=_array(64, 40), target=_array(60, 44),
                 image_keys=('image', 'target')))
    assert res['image'].shape == res['target'].shape == (32, 20, 3)


def test_center_crop():
    image = _array(10, 12)
    out = CenterCrop(4)(dict(image=image))['image']
    np.testing.assert_array_equal(out, image[3:7, 4:8])
    pil = CenterCrop((4, 6))(dict(image=Image.fromarray(image)))['image']
    np.testing.assert_array_equal(np.asarray(pil), image[3:7, 3:9])
    with pytest.raises(ValueError, match='smaller than the crop'):
        CenterCrop(16)(dict(image=image))


def test_random_crop_is_deterministic_per_sample_and_paired():
    image, target = _array(20, 20, 0), _array(20, 20, 1)
    crop = RandomCrop(8)

    def run(seed):
        res = dict(image=image, target=target, image_keys=('image', 'target'),
                   rng=np.random.default_rng(seed))
        return crop(res)

    a, b = run(3), run(3)
    np.testing.assert_array_equal(a['image'], b['image'])
    assert a['image'].shape == (8, 8, 3)
    # source and target are cut at the same place
    idx = [(i, j) for i in range(13) for j in range(13)
           if np.array_equal(image[i:i + 8, j:j + 8], a['image'])]
    (i, j), = idx
    np.testing.assert_array_equal(a['target'], target[i:i + 8, j:j + 8])
    crops = {run(s)['image'].tobytes() for s in range(20)}
    assert len(crops) > 1
    # without an rng in results the transform's own seed decides
    one = RandomCrop(8, seed=5)(dict(image=image))['image']
    two = RandomCrop(8, seed=5)(dict(image=image))['image']
    np.testing.assert_array_equal(one, two)


def test_random_horizontal_flip():
    image = _array(4, 6)
    out = RandomHorizontalFlip(p=1.0)(dict(image=image))
    np.testing.assert_array_equal(out['image'], image[:, ::-1])
    assert out['flipped']
    out = RandomHorizontalFlip(p=0.0)(dict(image=image))
    np.testing.assert_array_equal(out['image'], image)
    pil = RandomHorizontalFlip(p=1.0)(dict(image=Image.fromarray(image)))
    np.testing.assert_array_equal(np.asarray(pil['image']), image[:, ::-1])
    flip = RandomHorizontalFlip(p=0.5)
    draws = [
        flip(dict(image=image, rng=np.random.default_rng(s)))['flipped']
        for s in range(16)
    ]
    again = [
        flip(dict(image=image, rng=np.random.default_rng(s)))['flipped']
        for s in range(16)
    ]
    assert draws == again and any(draws) and not all(draws)
    with pytest.raises(ValueError):
        RandomHorizontalFlip(p=1.5)


def test_to_tensor_image():
    image = _array(4, 6)
    image[0, 0] = (0, 255, 127)
    x = ToTensorImage()(dict(image=Image.fromarray(image)))['image']
    assert x.shape == (3, 4, 6) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    assert x[0, 0, 0] == -1 and x[1, 0, 0] == 1
    grey = ToTensorImage()(dict(image=image[:, :, 0]))['image']
    assert grey.shape == (3, 4, 6)
    rgba = Image.fromarray(np.zeros((4, 4, 4), np.uint8), 'RGBA')
    assert ToTensorImage()(dict(image=rgba))['image'].shape == (3, 4, 4)
    with pytest.raises(ValueError):
        ToTensorImage()(dict(image=np.zeros((4, 4, 3), np.float32)))


def test_build_pipeline_from_configs():
    pipeline = build_pipeline([
        dict(type='ResizeToStride', max_size=32, min_size=16, stride=8),
        dict(type='RandomCrop', size=16),
        dict(type='RandomHorizontalFlip', p=0.5),
        dict(type='ToTensorImage'),
    ])
    assert isinstance(pipeline, Pipeline) and len(pipeline) == 4
    out = pipeline(dict(image=_array(50, 70), rng=np.random.default_rng(0)))
    assert out['image'].shape == (3, 16, 16)
    assert 'ResizeToStride' in repr(pipeline)
    assert build_pipeline(None)(dict(image=1)) == dict(image=1)
    # a transform returning None filters the sample (mmcv convention)
    assert build_pipeline([lambda r: None, ToTensorImage()])(
        dict(image=_array(2, 2))) is None
    with pytest.raises(TypeError):
        build_pipeline([3])


def test_registered_names():
    for name in ('ResizeToStride', 'CenterCrop', 'RandomCrop',
                 'RandomHorizontalFlip', 'ToTensorImage'):
        assert TRANSFORMS.get(name) is not None
