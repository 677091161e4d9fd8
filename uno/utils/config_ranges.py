"""Form and range checks of a config's settings, before anything is built.

An empty file, a YAML file without a model, ``model = None`` or
``objectives`` given as a list are refused in one line by
:func:`check_form`.

A negative clip norm trains by gradient ascent, zero iterations train
nothing and exit 0, a NaN weight fails hundreds of steps later: each is
refused here in one line naming the key path, the value and the allowed
range. The rules are a table (:data:`RULES`) of dotted paths, where ``*``
matches any one key, so adding a setting is one line. Three checks relate
settings to each other: image sizes divisible by the strides that cut them
into tokens, a model vocabulary at least the tokenizer's, and an epoch
loop over a sampler whose epochs end (an infinite sampler would hang it).
"""
import math
from typing import Any, Callable, Iterator, List, Tuple

from uno.errors import UnoConfigError, did_you_mean

_SEED_MAX = 2**32 - 1  # numpy's and torch's common seed range


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _int_at_least(low: int) -> Callable[[Any], bool]:
    """Whole numbers ``>= low`` (``2.0`` too, as the type checks allow).
    """
    return lambda v: _number(v) and math.isfinite(v) and \
        float(v).is_integer() and v >= low


def _positive(v) -> bool:
    return _number(v) and math.isfinite(v) and v > 0


def _non_negative(v) -> bool:
    return _number(v) and math.isfinite(v) and v >= 0


def _keep(v) -> bool:  # mmengine: -1 keeps every checkpoint
    return v == -1 or _int_at_least(1)(v)


def _seed(v) -> bool:
    return v is None or (_int_at_least(0)(v) and v <= _SEED_MAX)


def _fraction(v) -> bool:
    return _number(v) and 0 <= v <= 1


#: (path, test, allowed values); ``*`` matches any key of a dict
RULES: List[Tuple[str, Callable[[Any], bool], str]] = [
    ('train_cfg.max_iters', _int_at_least(1), 'an integer >= 1'),
    ('train_cfg.max_epochs', _int_at_least(1), 'an integer >= 1'),
    ('train_cfg.val_interval', _int_at_least(1), 'an integer >= 1'),
    ('optim_wrapper.optimizer.lr', _positive, 'a finite number > 0'),
    ('optim_wrapper.optimizer.weight_decay', _non_negative,
     'a finite number >= 0'),
    ('optim_wrapper.clip_grad.max_norm', _positive, 'a finite number > 0'),
    # each micro-batch would be normalised by its own token count, so N
    # micro-batches would not train as their union: refused, not inexact
    ('optim_wrapper.accumulative_counts', lambda v: v == 1,
     '1 (gradient accumulation is not exact with per-batch token '
     'normalisation; raise the batch size or the number of GPUs)'),
    ('default_hooks.*.interval', _int_at_least(1), 'an integer >= 1'),
    ('default_hooks.checkpoint.max_keep_ckpts', _keep,
     '-1 (keep all) or an integer >= 1'),
    ('custom_hooks.*.interval', _int_at_least(1), 'an integer >= 1'),
    ('objectives.*.weight', _non_negative, 'a finite number >= 0'),
    ('randomness.seed', _seed, f'None or an integer in [0, {_SEED_MAX}]'),
    ('*_dataloader.batch_size', _int_at_least(1), 'an integer >= 1'),
    ('*_dataloader.num_workers', _int_at_least(0), 'an integer >= 0'),
    ('*_dataloader.dataset.num_samples', _int_at_least(1),
     'an integer >= 1'),
    ('*_dataloader.dataset.datasets.*.num_samples', _int_at_least(1),
     'an integer >= 1'),
    ('train_dataloader.dataset.weights.*', _non_negative,
     'a finite number >= 0'),
    ('*_dataloader.dataset.latent_fraction', _fraction, 'a number in [0, 1]'),
    ('*_dataloader.dataset.datasets.*.latent_fraction', _fraction,
     'a number in [0, 1]'),
    ('env_cfg.dist_cfg.timeout', _positive,
     'a finite number of seconds > 0'),
    ('model.llm.*_size', _int_at_least(1), 'an integer >= 1'),
    ('model.llm.num_*', _int_at_least(1), 'an integer >= 1'),
]


def _glob(pattern: str, key: str) -> bool:
    """``*`` alone matches any key; ``a_*``/``*_b`` match prefix/suffix."""
    if pattern == '*':
        return True
    if pattern.startswith('*'):
        return key.endswith(pattern[1:])
    if pattern.endswith('*'):
        return key.startswith(pattern[:-1])
    return key == pattern


def _find(value, parts: List[str],
          prefix: str = '') -> Iterator[Tuple[str, Any]]:
    """Every ``(path, value)`` of ``value`` that the dotted ``parts``
    match."""
    if not parts:
        yield prefix, value
        return
    if not isinstance(value, dict):
        return
    for key, child in value.items():
        if isinstance(key, str) and _glob(parts[0], key):
            yield from _find(child, parts[1:],
                             f'{prefix}.{key}' if prefix else key)


#: top-level keys that must be dicts when present
_DICT_KEYS = ('model', 'objectives', 'train_dataloader', 'val_dataloader',
              'test_dataloader', 'optim_wrapper', 'train_cfg',
              'default_hooks', 'randomness', 'env_cfg')
# what mmengine's Runner reads of env_cfg (it ignores anything else)
_ENV_KEYS = dict(env_cfg=('cudnn_benchmark', 'mp_cfg', 'dist_cfg',
                          'resource_limit'),
                 mp_cfg=('mp_start_method', 'opencv_num_threads'),
                 dist_cfg=('backend', 'timeout', 'init_backend', 'port'))
# training needs all three (mmengine refuses a partial set)
_TRAIN_KEYS = ('train_dataloader', 'train_cfg', 'optim_wrapper')


def check_form(cfg) -> None:
    """Refuse a config without a model or with a section of the wrong kind.

    Raises:
        UnoConfigError: One line naming the key and what it must be.
    """
    cfg = cfg.to_dict() if hasattr(cfg, 'to_dict') else dict(cfg)
    model = cfg.get('model')
    if not isinstance(model, dict) or not model.get('type'):
        got = 'nothing' if model is None else repr(model)[:60]
        raise UnoConfigError(
            f'the config has no model (model = {got}): set model = '
            "dict(type='UnoModel', ...) or inherit one, e.g. _base_ = "
            "['../_base_/models/mot_mini.py']")
    for key in _DICT_KEYS:
        if cfg.get(key) is not None and not isinstance(cfg[key], dict):
            kind = type(cfg[key]).__name__
            example = (" keyed by name, e.g. objectives = dict(flow=dict("
                       "type='FlowMatchingObjective'))"
                       if key == 'objectives' else '')
            raise UnoConfigError(
                f'{key} must be a dict{example}; got a {kind}')
    for name, obj in (cfg.get('objectives') or {}).items():
        if obj is not None and not isinstance(obj, dict):
            raise UnoConfigError(
                f'objectives.{name} must be a dict (type=..., weight=...); '
                f'got a {type(obj).__name__}')
    freeze = model.get('freeze')
    if freeze is not None and not isinstance(freeze, dict):
        raise UnoConfigError(
            f'model.freeze must be a dict of part -> bool, e.g. '
            f'dict(und=True, und_encoder=True); got {freeze!r}')
    _check_env_keys(cfg.get('env_cfg') or {}, 'env_cfg')
    given = [k for k in _TRAIN_KEYS if cfg.get(k) is not None]
    if given and len(given) < len(_TRAIN_KEYS):
        missing = [k for k in _TRAIN_KEYS if k not in given]
        raise UnoConfigError(
            f'{", ".join(missing)} = None while {", ".join(given)} '
            f'{"is" if len(given) == 1 else "are"} set: training needs '
            f'all of {", ".join(_TRAIN_KEYS)} (or none of them, to test '
            'only)')


def _check_env_keys(section: dict, path: str) -> None:
    """Unknown keys of ``env_cfg`` (and its ``mp_cfg``, ``dist_cfg``),
    which mmengine would ignore without a word."""
    known = _ENV_KEYS[path.split('.')[-1]]
    for key, value in section.items():
        if key not in known:
            raise UnoConfigError(f"unknown key '{key}' at {path}: "
                                 f'{did_you_mean(key, known)}')
        if key in _ENV_KEYS and isinstance(value, dict):
            _check_env_keys(value, f'{path}.{key}')


def check_ranges(cfg) -> None:
    """Refuse the first numeric setting outside its range.

    Args:
        cfg (Config | dict): A resolved config.

    Raises:
        UnoConfigError: ``"<path> = <value>: must be <range>"``.
    """
    cfg = cfg.to_dict() if hasattr(cfg, 'to_dict') else dict(cfg)
    for path, test, allowed in RULES:
        for where, value in _find(cfg, path.split('.')):
            if not test(value):
                raise UnoConfigError(
                    f'{where} = {value!r}: must be {allowed}')
    _check_strides(cfg)
    _check_vocabulary(cfg)
    _check_loop(cfg)


def _check_strides(cfg: dict) -> None:
    """Image sizes must split into whole tokens at every stride."""
    model = cfg.get('model') or {}
    strides = []
    for name in ('latent_encoder', 'und_encoder'):
        enc = model.get(name) or {}
        size = enc.get('patch_size', (enc.get('config') or {}).get(
            'patch_size'))
        if isinstance(size, int) and size > 0:
            strides.append((f'model.{name} patch_size', size))
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        collate = (cfg.get(loader) or {}).get('collate_fn') or {}
        for key in ('latent_stride', 'vit_stride'):
            if isinstance(collate.get(key), int) and collate[key] > 0:
                strides.append((f'{loader}.collate_fn.{key}', collate[key]))
    for where, size in _find(cfg, ['*_dataloader', 'dataset', 'image_size']):
        _divisible(where, size, strides)
    for where, size in _find(
            cfg, ['*_dataloader', 'dataset', 'datasets', '*', 'image_size']):
        _divisible(where, size, strides)


def _divisible(where: str, size, strides) -> None:
    if not _int_at_least(1)(size):
        raise UnoConfigError(f'{where} = {size!r}: must be an integer >= 1')
    for name, stride in strides:
        if size % stride:
            raise UnoConfigError(
                f'{where} = {size} is not a multiple of the {name} '
                f'({stride}): images must split into whole tokens')


def _check_vocabulary(cfg: dict) -> None:
    """The model must embed every id the tokenizer can produce."""
    vocab = ((cfg.get('model') or {}).get('llm') or {}).get('vocab_size')
    tok = (cfg.get('tokenizer') or {}).get('vocab_size')
    if _number(vocab) and _number(tok) and vocab < tok:
        raise UnoConfigError(
            f'model.llm.vocab_size = {vocab} is smaller than '
            f'tokenizer.vocab_size = {tok}: the model must embed every id '
            'the tokenizer produces')


def _check_loop(cfg: dict) -> None:
    """An epoch-based loop needs a sampler whose epoch ends."""
    loop = (cfg.get('train_cfg') or {})
    by_epoch = loop.get('type') == 'EpochBasedTrainLoop' or \
        loop.get('by_epoch') is True
    sampler = ((cfg.get('train_dataloader') or {}).get('sampler') or {})
    if by_epoch and sampler.get('type') == 'InfiniteSampler':
        raise UnoConfigError(
            'train_cfg is epoch-based but train_dataloader.sampler.type = '
            "'InfiniteSampler' never ends an epoch: use 'DefaultSampler' "
            "or an 'IterBasedTrainLoop'")
