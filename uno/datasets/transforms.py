"""Per-sample image transforms of the file datasets (registered in TRANSFORMS).

Each transform is a small callable in the mmcv style: it takes the dict
``results`` and returns it. Images sit under ``results['image']`` (and,
for paired samples such as edits, under every key listed in
``results['image_keys']``) as a PIL image or an ``(H, W, 3)`` uint8 array.
Random transforms draw their parameters once per call and apply them to
every image key, so an edit's source and target get the same crop and flip;
they draw from ``results['rng']`` (a ``numpy.random.Generator`` the dataset
seeds per sample) when present, which makes them deterministic per sample.

Only PIL and numpy are used (no torchvision). :func:`build_pipeline` turns
a list of configs into one callable.
"""
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from uno.registry import TRANSFORMS
from .builder import to_tensor_image

ImageLike = Union[Image.Image, np.ndarray]
Size = Union[int, Sequence[int]]


def image_keys(results: dict) -> Tuple[str, ...]:
    """Keys of ``results`` that hold images (default ``('image', )``)."""
    return tuple(results.get('image_keys', ('image', )))


def image_size(image: ImageLike) -> Tuple[int, int]:
    """``(height, width)`` of a PIL image or an ``(H, W, C)`` array."""
    if isinstance(image, Image.Image):
        return image.height, image.width
    return int(image.shape[0]), int(image.shape[1])


def _pair(size: Size, name: str) -> Tuple[int, int]:
    if isinstance(size, int):
        size = (size, size)
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f'{name} must be a positive int or (h, w), got '
                         f'{size}')
    return size


def _rng(results: dict, own: np.random.Generator) -> np.random.Generator:
    rng = results.get('rng')
    return rng if isinstance(rng, np.random.Generator) else own


def _crop(image: ImageLike, top: int, left: int, h: int, w: int):
    if isinstance(image, Image.Image):
        return image.crop((left, top, left + w, top + h))
    return image[top:top + h, left:left + w]


def _check_crop(results: dict, size: Tuple[int, int], name: str):
    """Size of the first image; all image keys must share it."""
    sizes = {image_size(results[k]) for k in image_keys(results)}
    if len(sizes) != 1:
        raise ValueError(f'{name}: the images of one sample differ in '
                         f'size: {sorted(sizes)}')
    (h, w), = sizes
    if h < size[0] or w < size[1]:
        raise ValueError(f'{name}: image of size {h}x{w} is smaller than '
                         f'the crop {size[0]}x{size[1]}; resize first '
                         '(ResizeToStride with min_size)')
    return h, w


@TRANSFORMS.register_module()
class ResizeToStride:
    """Resize keeping the aspect ratio, then round sides to ``stride``.

    BAGEL's image transform idea: shrink so the long side is at most
    ``max_size`` (never enlarge for that), enlarge so the short side is at
    least ``min_size``, then round each side to the nearest multiple of
    ``stride`` (at least one stride, the long side never above
    ``max_size``), so the image splits into whole latent / ViT patches.
    Every image key gets the size computed from ``results['image']``.

    Args:
        max_size (int): Upper bound of the long side. Should be a multiple
            of ``stride``.
        min_size (int): Lower bound of the short side. Defaults to 0.
        stride (int): Each output side is a multiple of it. Defaults to 16.
        resample (str): PIL filter name (``'bicubic'``, ``'bilinear'``,
            ``'lanczos'``, ``'nearest'``). Defaults to ``'bicubic'``.
    """

    def __init__(self,
                 max_size: int,
                 min_size: int = 0,
                 stride: int = 16,
                 resample: str = 'bicubic'):
        if stride <= 0 or max_size < stride:
            raise ValueError(f'need 0 < stride <= max_size, got stride='
                             f'{stride}, max_size={max_size}')
        if min_size > max_size:
            raise ValueError(f'min_size={min_size} > max_size={max_size}')
        filters = dict(bicubic=Image.BICUBIC, bilinear=Image.BILINEAR,
                       lanczos=Image.LANCZOS, nearest=Image.NEAREST)
        if resample not in filters:
            raise ValueError(f'resample must be one of {sorted(filters)}, '
                             f'got {resample!r}')
        self.max_size, self.min_size, self.stride = max_size, min_size, stride
        self.resample = filters[resample]

    def output_size(self, height: int, width: int) -> Tuple[int, int]:
        """``(h, w)`` an image of ``height x width`` is resized to."""
        scale = min(self.max_size / max(height, width), 1.0)
        scale = max(scale, self.min_size / min(height, width))
        limit = self.max_size // self.stride * self.stride
        out = []
        for side in (height, width):
            n = max(1, int(round(side * scale / self.stride)))
            out.append(min(n * self.stride, limit))
        return out[0], out[1]

    def __call__(self, results: dict) -> dict:
        h, w = self.output_size(*image_size(results['image']))
        for key in image_keys(results):
            image = results[key]
            if image_size(image) == (h, w):
                continue
            pil = image if isinstance(image, Image.Image) else (
                Image.fromarray(np.asarray(image, dtype=np.uint8)))
            out = pil.resize((w, h), self.resample)
            results[key] = out if isinstance(image, Image.Image) else (
                np.array(out))
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(max_size={self.max_size}, '
                f'min_size={self.min_size}, stride={self.stride})')


@TRANSFORMS.register_module()
class CenterCrop:
    """Crop the centre ``size`` region of every image key.

    Args:
        size (int | tuple[int, int]): Output ``(h, w)`` or a square side.

    Raises:
        ValueError: On an image smaller than ``size`` (a data error: the
            dataset counts the sample as broken).
    """

    def __init__(self, size: Size):
        self.size = _pair(size, 'size')

    def __call__(self, results: dict) -> dict:
        h, w = _check_crop(results, self.size, type(self).__name__)
        th, tw = self.size
        top, left = (h - th) // 2, (w - tw) // 2
        for key in image_keys(results):
            results[key] = _crop(results[key], top, left, th, tw)
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(size={self.size})'


@TRANSFORMS.register_module()
class RandomCrop:
    """Crop a random ``size`` region, the same one for every image key.

    Args:
        size (int | tuple[int, int]): Output ``(h, w)`` or a square side.
        seed (int, optional): Seed of the transform's own generator, used
            when ``results`` carries no ``rng``. Defaults to None.
    """

    def __init__(self, size: Size, seed: Optional[int] = None):
        self.size = _pair(size, 'size')
        self._own_rng = np.random.default_rng(seed)

    def __call__(self, results: dict) -> dict:
        h, w = _check_crop(results, self.size, type(self).__name__)
        th, tw = self.size
        rng = _rng(results, self._own_rng)
        top = int(rng.integers(h - th + 1))
        left = int(rng.integers(w - tw + 1))
        for key in image_keys(results):
            results[key] = _crop(results[key], top, left, th, tw)
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(size={self.size})'


@TRANSFORMS.register_module()
class RandomHorizontalFlip:
    """Mirror every image key left-right with probability ``p``.

    Not for data whose text names left and right (ShapesWorld's position
    prompts): flipping the image would contradict its caption.

    Args:
        p (float): Flip probability. Defaults to 0.5.
        seed (int, optional): Seed of the transform's own generator, used
            when ``results`` carries no ``rng``. Defaults to None.
    """

    def __init__(self, p: float = 0.5, seed: Optional[int] = None):
        if not 0 <= p <= 1:
            raise ValueError(f'p must be in [0, 1], got {p}')
        self.p = p
        self._own_rng = np.random.default_rng(seed)

    def __call__(self, results: dict) -> dict:
        flip = bool(_rng(results, self._own_rng).random() < self.p)
        results['flipped'] = flip
        if not flip:
            return results
        for key in image_keys(results):
            image = results[key]
            if isinstance(image, Image.Image):
                results[key] = image.transpose(Image.FLIP_LEFT_RIGHT)
            else:
                results[key] = np.ascontiguousarray(image[:, ::-1])
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(p={self.p})'


@TRANSFORMS.register_module()
class ToTensorImage:
    """Every image key to a float ``(3, H, W)`` tensor in ``[-1, 1]``.

    PIL images are converted to RGB first; grey ``(H, W)`` arrays are
    repeated to three channels.
    """

    def __call__(self, results: dict) -> dict:
        for key in image_keys(results):
            results[key] = to_tensor_image(as_rgb_array(results[key]))
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}()'


def as_rgb_array(image: ImageLike) -> np.ndarray:
    """A PIL image or array as an ``(H, W, 3)`` uint8 array."""
    if isinstance(image, Image.Image):
        return np.array(image.convert('RGB'))  # a writable copy
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f'expected an (H, W, 3) uint8 image, got '
                         f'{array.dtype} {array.shape}')
    # torch.from_numpy warns on read-only arrays (np.asarray of PIL images)
    return array if array.flags.writeable else array.copy()


class Pipeline:
    """Transforms applied in order; a transform returning None stops it.

    Args:
        transforms (list[Callable]): Built transforms.
    """

    def __init__(self, transforms: List[Callable]):
        self.transforms = list(transforms)

    def __call__(self, results: dict) -> Optional[dict]:
        for transform in self.transforms:
            results = transform(results)
            if results is None:  # the mmcv convention: filter the sample
                return None
        return results

    def __len__(self) -> int:
        return len(self.transforms)

    def __repr__(self) -> str:
        inner = ', '.join(repr(t) for t in self.transforms)
        return f'{type(self).__name__}([{inner}])'


def build_pipeline(
        cfgs: Optional[Sequence[Union[dict, Callable]]]) -> Pipeline:
    """Build a :class:`Pipeline` from TRANSFORMS configs (or callables).

    Args:
        cfgs (list[dict | Callable], optional): Transform configs such as
            ``dict(type='ResizeToStride', max_size=256, stride=16)``, or
            transforms already built. None or empty: the identity.

    Returns:
        Pipeline: The callable pipeline.
    """
    transforms = []
    for cfg in cfgs or ():
        if isinstance(cfg, dict):
            transforms.append(TRANSFORMS.build(cfg))
        elif callable(cfg):
            transforms.append(cfg)
        else:
            raise TypeError(f'a pipeline entry must be a TRANSFORMS config '
                            f'dict or a callable, got {type(cfg).__name__}')
    return Pipeline(transforms)
