"""Config errors in one line, naming the closest valid names or the range.

Table keys are path patterns: ``*`` any part of one key, ``**.`` any keys
or none, ``|`` or; a table's first matching key wins. The checks and their
messages: docs/configs.md, "Validation".
"""
import contextlib
import difflib
import inspect
import math
import re
import textwrap
import traceback
from typing import Any, Callable, Iterable, Iterator

import mmengine.registry as mm
from mmengine.registry import Registry, build_from_cfg
from torch.utils.data import DataLoader

from uno import registry as R
from uno.errors import UnoConfigError, short_list

# read by mmengine's Runner besides its arguments, and by uno (a project
# adds its own with ``config_check.UNO_TOP_LEVEL_KEYS += ('key', )``)
RUNNER_CFG_KEYS = ('model_wrapper_cfg', 'sync_bn', 'find_unused_parameters',
                   'compile', 'activation_checkpointing',
                   'efficient_conv_bn_eval')
UNO_TOP_LEVEL_KEYS = ('objectives', 'tokenizer', 'custom_imports', 'strategy',
                      'runner_type', 'benchmark', 'load_strict')
# keys mmengine's builders pop before calling a class (a hook's priority, ..)
BUILDER_KEYS = ('type', '_scope_', 'priority', 'constructor', 'paramwise_cfg',
                'convert_to_iter_based', 'num_batch_per_epoch',
                'disable_subprocess_warning')
TRAIN_KEYS = ('train_dataloader', 'train_cfg', 'optim_wrapper')  # all or none
SHAPES = {  # -> the types a section may have besides None, as words
    'model|*_dataloader|optim_wrapper|train_cfg|default_hooks|randomness|'
    'env_cfg': (dict, 'a dict'),
    'objectives.*': (dict, 'a dict (type=..., weight=...)'),
    'objectives': (dict, "a dict keyed by name, e.g. objectives = dict("
                   "flow=dict(type='FlowMatchingObjective'))"),
    'model.freeze': (dict, 'a dict of part -> bool, e.g. dict(und=True, '
                     'und_encoder=True)'),
    'custom_hooks|visualizer.vis_backends': ((list, tuple), 'a list of dicts'),
    'param_scheduler': ((list, tuple, dict), 'a list of dicts or a dict'),
}
SLOTS = {  # -> the registries where the ``type`` of a dict there is found
    'model|model.data_preprocessor|data_preprocessor': (R.MODELS, ),
    'model.*_encoder': (R.ENCODERS, ), 'model.attention': (R.ATTENTION, ),
    '**.tokenizer': (R.TOKENIZERS, ), 'objectives.*': (R.OBJECTIVES, ),
    '*_dataloader.sampler|*_dataloader.batch_sampler': (R.DATA_SAMPLERS, ),
    '*_dataloader.collate_fn|*_dataloader.worker_init_fn': (R.FUNCTIONS, ),
    '*_dataloader.**.pipeline.*': (R.TRANSFORMS, ),
    '*_dataloader.**.dataset|*_dataloader.**.datasets.*': (R.DATASETS, ),
    'default_hooks.*|custom_hooks.*': (R.HOOKS, ),
    'optim_wrapper': (R.OPTIM_WRAPPERS, ), 'visualizer': (mm.VISUALIZERS, ),
    'optim_wrapper.optimizer': (mm.OPTIMIZERS, ),
    'param_scheduler|param_scheduler.*': (mm.PARAM_SCHEDULERS, ),
    'visualizer.vis_backends.*': (R.VISBACKENDS, ),
    'train_cfg|val_cfg|test_cfg': (R.LOOPS, ),
    '*_evaluator|*_evaluator.*|*_evaluator.metrics.*': (R.EVALUATORS,
                                                        mm.EVALUATOR),
    'log_processor': (mm.LOG_PROCESSORS, ), 'strategy': (mm.STRATEGIES, ),
    'model_wrapper_cfg': (mm.MODEL_WRAPPERS, ),
}
UNTYPED = {  # -> what receives an untyped dict there, or its valid keys
    '*_dataloader': DataLoader,  # what mmengine's build_dataloader passes on
    'env_cfg': ('cudnn_benchmark', 'mp_cfg', 'dist_cfg', 'resource_limit'),
    'env_cfg.mp_cfg': ('mp_start_method', 'opencv_num_threads'),
    'env_cfg.dist_cfg': ('backend', 'timeout', 'init_backend', 'port'),
    'optim_wrapper.clip_grad': ('type', 'max_norm', 'norm_type', 'clip_value',
                                'error_if_nonfinite', 'foreach'),
}
IMAGE_SIZES = ('*_dataloader.dataset.image_size|'
               '*_dataloader.dataset.datasets.*.image_size')
STRIDES = ('model.*_encoder.patch_size|model.*_encoder.config.patch_size|'
           '*_dataloader.collate_fn.latent_stride|'
           '*_dataloader.collate_fn.vit_stride')  # must divide image sizes
_SEED_MAX = 2**32 - 1  # numpy's and torch's common seed range
_num = lambda v: type(v) in (int, float) and math.isfinite(v)  # noqa: E731
_int = lambda low, high=math.inf: lambda v: _num(v) and float(  # noqa: E731
    v).is_integer() and low <= v <= high
RULES = [  # (path patterns, test, allowed values)
    ('train_cfg.max_iters|train_cfg.max_epochs|train_cfg.val_interval|'
     '*_hooks.*.interval|*_dataloader.batch_size|model.llm.*_size|'
     'model.llm.num_*|*_dataloader.dataset.num_samples|'
     f'*_dataloader.dataset.datasets.*.num_samples|{IMAGE_SIZES}|'
     'model.*_encoder.patch_size|model.*_encoder.config.patch_size|'
     'optim_wrapper.accumulative_counts', _int(1), 'an integer >= 1'),
    ('*_dataloader.dataset.tasks.*.n_per_tag|'
     '*_dataloader.dataset.tasks.*.num_samples', _int(1),
     'an integer >= 1 (leave a task out to skip it)'),
    ('*_dataloader.num_workers', _int(0), 'an integer >= 0'),
    ('optim_wrapper.optimizer.lr|optim_wrapper.clip_grad.max_norm',
     lambda v: _num(v) and v > 0, 'a finite number > 0'),
    ('optim_wrapper.optimizer.weight_decay|objectives.*.weight|'
     'train_dataloader.dataset.weights.*', lambda v: _num(v) and v >= 0,
     'a finite number >= 0'),
    ('default_hooks.checkpoint.max_keep_ckpts',
     lambda v: v == -1 or _int(1)(v), '-1 (keep all) or an integer >= 1'),
    ('randomness.seed', lambda v: v is None or _int(0, _SEED_MAX)(v),
     f'None or an integer in [0, {_SEED_MAX}]'),
    ('*_dataloader.dataset.latent_fraction|'
     '*_dataloader.dataset.datasets.*.latent_fraction',
     lambda v: _num(v) and 0 <= v <= 1, 'a number in [0, 1]'),
    ('env_cfg.dist_cfg.timeout', lambda v: _num(v) and v > 0,
     'a finite number of seconds > 0'),
    ('model.freeze.*', lambda v: type(v) is bool, 'True or False'),
    ('param_scheduler.start_factor|param_scheduler.*.start_factor',
     lambda v: _num(v) and 0 < v <= 1, 'a number in (0, 1]'),
    ('optim_wrapper.clip_grad.norm_type', lambda v: type(v) in (
        int, float) and v > 0, "a number > 0 (float('inf'): max norm)"),
    ('optim_wrapper.clip_grad.type', lambda v: v in ('norm', 'value'),
     "'norm' or 'value'"),
    ('env_cfg.mp_cfg.mp_start_method', lambda v: v in (
        'fork', 'spawn', 'forkserver'), "'fork', 'spawn' or 'forkserver'"),
]
_lt = lambda a, b: _num(a) and _num(b) and a < b  # noqa: E731
CROSS = [  # (paths, test of the values there, message formatted with them)
    (('model.llm.vocab_size', 'tokenizer.vocab_size'), _lt,
     'model.llm.vocab_size = {0} is smaller than tokenizer.vocab_size = {1}'
     ': the model must embed every id the tokenizer produces'),
    (('train_dataloader.dataset.num_samples', 'train_dataloader.batch_size'),
     _lt, 'train_dataloader.batch_size = {1} is larger than train_'
     'dataloader.dataset.num_samples = {0}: a batch must fit in the data set'),
    (('optim_wrapper.accumulative_counts', 'train_cfg.type'),
     lambda n, loop: _num(n) and n > 1 and loop not in (
         'IterBasedTrainLoop', 'AccumulatingTrainLoop'),
     "optim_wrapper.accumulative_counts = {0} needs train_cfg.type = 'Iter"
     "BasedTrainLoop' (an iteration is then one optimizer step over {0} "
     'batches), got {1!r}'),
    (('train_cfg.type', 'train_cfg.by_epoch', 'train_dataloader.sampler.type'),
     lambda loop, by_epoch, sampler: sampler == 'InfiniteSampler' and (
         loop == 'EpochBasedTrainLoop' or by_epoch is True),
     'train_cfg is epoch-based but train_dataloader.sampler.type = '
     "'InfiniteSampler' never ends an epoch: use 'DefaultSampler' or an "
     "'IterBasedTrainLoop'"),
]
_KINDS = {bool: 'a bool', int: 'an int', float: 'a float'}


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """``did you mean 'x'?`` or the valid names: a message's tail."""
    names = sorted(set(map(str, candidates)))
    low = {c.lower(): c for c in names}
    hits = [low[h] for h in difflib.get_close_matches(name.lower(), low)]
    hits += [c for c in names if c not in hits and len(name) >= 3 and (
        name.lower() in c.lower() or c.lower() in name.lower())]
    if hits:
        return 'did you mean ' + ' or '.join(map(repr, hits[:3])) + '?'
    return ('valid names: ' + short_list(names, 12)
            if names else 'nothing is valid there.')


def check_keys(keys: Iterable[str], allowed: Iterable[str],
               what: str = 'key', where: str = '', prefix: str = '') -> None:
    """Raise ``unknown <what> '<prefix><key>'<where>: did you mean ...``
    (:class:`UnoConfigError`) for the first of ``keys`` not ``allowed``."""
    allowed = list(allowed)
    for key in keys:
        if key not in allowed:
            raise UnoConfigError(f"unknown {what} '{prefix}{key}'{where}: "
                                 f'{did_you_mean(key, allowed)}')


def validate_config(cfg) -> None:
    """Check a resolved config (Config or dict) before anything is built.

    Raises:
        UnoConfigError: One line naming the first bad path and the fix.
    """
    from mmengine.runner import Runner
    cfg = _as_dict(cfg)
    check_keys([k for k in cfg if not str(k).startswith('_')],
               set(inspect.signature(Runner).parameters) - {'cfg'} |
               set(RUNNER_CFG_KEYS + UNO_TOP_LEVEL_KEYS),
               'top-level config key')
    model = cfg.get('model')
    if not isinstance(model, dict) or not model.get('type'):
        raise UnoConfigError(
            'the config has no model (model = '
            f"{'nothing' if model is None else repr(model)[:60]}): set model "
            "= dict(type='UnoModel', ...) or inherit one, e.g. _base_ = "
            "['../_base_/models/mot_mini.py']")
    check_components(cfg)  # forms and types first: 'eight' is not an int
    given = [k for k in TRAIN_KEYS if cfg.get(k) is not None]
    if 0 < len(given) < len(TRAIN_KEYS):
        raise UnoConfigError(
            f'{", ".join(k for k in TRAIN_KEYS if k not in given)} = None '
            f'while {", ".join(given)} {"is" if len(given) == 1 else "are"} '
            f'set: training needs all of {", ".join(TRAIN_KEYS)} (or none '
            'of them, to test only)')
    check_ranges(cfg)


def check_components(cfg) -> None:
    """Raise on a section of the wrong type (:data:`SHAPES`), an unknown
    type, argument or key, or a string given for a number or a bool."""
    import mmengine.runner  # noqa: F401  registers mmengine's components
    for path, node in _nodes(_as_dict(cfg)):
        types, what = _first(SHAPES, path) or (object, '')
        if not isinstance(node, (types, type(None))):
            raise UnoConfigError(
                f'{path} must be {what}; got a {type(node).__name__}')
        obj = _first(UNTYPED, path)  # else the class of the node's type
        if not path or not isinstance(node, dict) or (obj is None
                                                      and 'type' not in node):
            continue
        what, where, skip_first = 'key', f' at {path}', False
        if obj is None:
            obj, what, slot = node['type'], 'argument', _first(SLOTS, path)
            if isinstance(obj, str):
                obj = _lookup(obj, slot, path)
            elif not callable(obj):
                raise UnoConfigError(
                    f'type at {path}.type must be a registered name or a '
                    f'class, got {type(obj).__name__}')
            where = f' of {getattr(obj, "__name__", obj)}{where}'
            skip_first = R.FUNCTIONS in (slot or ()) and not inspect.isclass(
                obj)
        params, any_key = _params(obj, skip_first)
        if not any_key:
            check_keys(node, list(params) + list(BUILDER_KEYS), what, where)
        for key, value in node.items():
            if isinstance(value, str) and params.get(key) in _KINDS:
                raise UnoConfigError(
                    f'{path}.{key}={value!r} is a str, but '
                    f'{getattr(obj, "__name__", obj)} expects '
                    f'{_KINDS[params[key]]} there')
        for param, keys in getattr(obj, 'config_schema', {}).items():
            if isinstance(node.get(param), dict) and 'type' not in node[param]:
                check_keys(node[param], keys, 'key', f' at {path}.{param}')


def check_ranges(cfg) -> None:
    """Raise on a value outside RULES, STRIDES or CROSS."""
    nodes = list(_nodes(_as_dict(cfg)))
    for path, value in nodes:
        for patterns, test, allowed in RULES:
            if _match(patterns, path) and not test(value):
                raise UnoConfigError(f'{path} = {value!r}: must be {allowed}')
    strides = [(p, v) for p, v in nodes
               if _match(STRIDES, p) and type(v) is int and v > 0]
    for path, size in [(p, v) for p, v in nodes if _match(IMAGE_SIZES, p)]:
        for name, stride in strides:
            if size % stride:
                raise UnoConfigError(
                    f'{path} = {size} is not a multiple of the {name} '
                    f'({stride}): images must split into whole tokens')
    values = dict(nodes)
    for paths, test, message in CROSS:
        if test(*map(values.get, paths)):
            raise UnoConfigError(message.format(*map(values.get, paths)))


def _as_dict(cfg) -> dict:
    return cfg.to_dict() if hasattr(cfg, 'to_dict') else dict(cfg or {})


def _nodes(value, path: str = ''):
    """``(dotted path, value)`` of ``value`` and all in it, parents first;
    private ``_`` variables of the top level are left out."""
    yield path, value
    items = value.items() if isinstance(value, dict) else enumerate(
        value) if isinstance(value, (list, tuple)) else ()
    for key, sub in items:
        if path or not str(key).startswith('_'):
            yield from _nodes(sub, f'{path}.{key}' if path else str(key))


def _match(patterns: str, path: str) -> bool:
    rx = re.escape(patterns).replace(r'\*\*\.', r'(?:.*\.)?')
    rx = rx.replace(r'\*', '[^.]*').replace(r'\|', '|')
    return re.fullmatch(f'(?:{rx})', path) is not None


def _first(table: dict, path: str):
    return next((v for p, v in table.items() if _match(p, path)), None)


def _lookup(name: str, slot, path: str):
    """The class ``name`` in the slot's registries (none: any registry)."""
    registries = slot or [v for m in (R, mm) for v in vars(m).values()
                          if isinstance(v, Registry)]
    for registry in registries:
        try:
            obj = registry.get(name)
        except RuntimeError:  # a dotted name that does not import
            continue
        except Exception as e:  # the lazy import of the registry failed
            raise UnoConfigError(
                f'cannot look up the type at {path}.type: registry '
                f"'{registry.scope}.{registry.name}' failed to import: "
                f'{type(e).__name__}: {e}') from e
        if obj is not None:
            return obj
    names = [n for r in registries for p in (r, r.parent) if p is not None
             for n in p.module_dict]  # uno's parents are mmengine's roots
    check_keys([name], names, 'type', f' at {path}.type ' + (
        f"(registry '{slot[0].scope}.{slot[0].name}')"
        if slot else '(any registry)'))


def _params(obj, skip_first: bool = False):
    """``({argument: its type}, takes any key)`` of a callable or keys."""
    if not callable(obj):
        return dict.fromkeys(obj), False
    try:
        ps = list(inspect.signature(obj).parameters.values())[skip_first:]
    except (TypeError, ValueError):  # builtins without a signature
        return {}, True
    return ({p.name: type(p.default) if p.annotation is p.empty else
             p.annotation for p in ps
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)},
            any(p.kind is p.VAR_KEYWORD for p in ps))


@contextlib.contextmanager
def config_build_errors(
        get_cfg: Callable[[], Any] = lambda: None) -> Iterator[None]:
    """Turn an error of a constructor in ``build_from_cfg`` into one line,
    ``cannot build <Type> at <path> (<Error>): <message>``; ``get_cfg()``
    gives the config the path is found in."""
    try:
        yield
    except (ValueError, TypeError, KeyError, IndexError,
            AssertionError) as exc:
        builds = [f.f_locals for f, _ in traceback.walk_tb(exc.__traceback__)
                  if f.f_code is build_from_cfg.__code__]
        if isinstance(exc, UnoConfigError) or not builds:
            raise
        registry, cfg = builds[-1].get('registry'), builds[-1].get('cfg')
        obj = given = cfg.get('type') if isinstance(cfg, dict) else None
        with contextlib.suppress(Exception):
            obj = registry.get(given) or given
        at = next((f' at {p}' for p, c in _nodes(_as_dict(get_cfg()))
                   if p and _built_from(c, cfg)), '')
        message = textwrap.shorten(str(exc), 600, placeholder='...')
        bad = re.search(r"unexpected keyword argument '(\w+)'", message)
        names = {n for c in getattr(obj, '__mro__', ()) if '__init__' in vars(
            c) for n in _params(c.__init__)[0]} - {'self'}
        hint = f'; {did_you_mean(bad.group(1), names)}' if (
            bad and names) else ''
        name = _name(obj) or f"a '{registry.name}' component"
        raise UnoConfigError(f'cannot build {name}{at} ({type(exc).__name__})'
                             f': {message}{hint}') from exc


def _built_from(comp, cfg) -> bool:
    """Whether ``cfg`` was built from ``comp``, with any keys added."""
    with contextlib.suppress(Exception):  # values that do not compare
        return 'type' in comp and _name(comp['type']) == _name(
            cfg.get('type')) and all(
                k in cfg and bool(cfg[k] == v) for k, v in comp.items()
                if k not in ('type', '_scope_'))
    return False


def _name(obj_type):
    """``'uno.FlowMatchingObjective'`` or the class -> its bare name."""
    return obj_type.rsplit('.', 1)[-1] if isinstance(
        obj_type, str) else getattr(obj_type, '__name__', None)
