"""Validate a resolved config before anything is built, and diff two configs.

mmengine's Runner silently ignores unknown keys, and an unknown ``type`` or
argument fails deep inside a build, if at all. :func:`validate_config`
checks a resolved :class:`mmengine.Config` up front and raises
:class:`UnoConfigError` with one line naming the key path and close matches:

* top-level keys must be read by mmengine's Runner
  (:data:`MMENGINE_TOP_LEVEL_KEYS`) or by uno (:data:`UNO_TOP_LEVEL_KEYS`);
  names starting with ``_`` are private config variables and are allowed
  (mmengine 0.10.7 keeps them in the resolved config, drops only ``__``
  names, and the Runner never reads them);
* every dict with a ``type`` key is a component: its type must be found in
  the registry its slot names (:data:`COMPONENT_SLOTS`), or, at a path no
  slot names, in any uno or mmengine registry;
* every other key of a component must be a parameter of the class (or of
  the function, after its first positional parameter, for ``FUNCTIONS``).
  A class whose ``__init__`` takes ``**kwargs`` accepts any key.

Two optional class attributes of a component refine the check:
``config_extra_keys: tuple`` names keys accepted although they are not
``__init__`` parameters, and ``config_schema: dict[str, tuple[str, ...]]``
maps a parameter name to the sub-keys allowed in an untyped dict given for
it, so that e.g. ``model.llm.hiden_size`` is caught too.

Keys mmengine's builders pop before calling the class (a hook's
``priority``, ...) are declared per slot. Only unknown keys are reported,
never missing ones, so arguments the builders inject (``runner``,
``dataloader``, ``params``, ``optimizer``) need no special case.

Values of scalar parameters are checked against the parameter's type
annotation (``int``, ``float``, ``bool``, or ``Optional`` of one), or, for
a parameter without annotation, against the type of its default: a string
given for a number or a bool, and a fraction given for an annotated
``int``, are errors (``train_dataloader.batch_size='eight'``,
``model.llm.num_layers=2.5``). ``None`` is always accepted, and so is
anything given for a parameter of another type: the check never rejects
what the class might accept. The sub-keys of a ``config_schema`` dict
are checked the same way when the class's ``config_schema_types`` (or
:data:`SCHEMA_TYPES`) names the callable that receives them. Dicts without
a ``type`` that a builder hands to a known callable (the dataloaders,
:data:`PLAIN_SLOTS`) get the key and value checks too.

What only a constructor can check (a negative weight, a window with ``lo >
hi``, a size not divisible by the heads) fails while building;
:func:`config_build_errors` turns a ``ValueError``, ``TypeError``,
``KeyError`` or ``IndexError`` raised inside a registry build (found in
the traceback) into one :class:`UnoConfigError` naming the component and
its config path.
"""
import contextlib
import dataclasses
import importlib
import inspect
import re
import types
import typing
from fnmatch import fnmatchcase
from typing import (Any, Callable, Dict, Iterator, List, NamedTuple,
                    Optional, Sequence, Tuple)

import mmengine.registry as mm
from mmengine.registry import Registry
from mmengine.registry.build_functions import build_from_cfg
from torch.utils.data import DataLoader

from uno import registry as uno_registry
from uno.registry import (ATTENTION, DATA_SAMPLERS, DATASETS, ENCODERS,
                          EVALUATORS, FUNCTIONS, HOOKS, LOOPS, MODELS,
                          OBJECTIVES, OPTIM_WRAPPERS, TOKENIZERS, TRANSFORMS,
                          VISBACKENDS)
from uno.utils.config_ranges import check_form, check_ranges
from uno.errors import UnoConfigError, did_you_mean

# Keys mmengine 0.10.7 reads from the top level of a config: the arguments
# of ``Runner.from_cfg`` / ``FlexibleRunner.from_cfg`` and the ones
# ``Runner`` reads later with ``self.cfg.get`` (wrapping, compile, ...).
# yapf: disable
MMENGINE_TOP_LEVEL_KEYS = (
    'model', 'work_dir', 'train_dataloader', 'val_dataloader',
    'test_dataloader', 'train_cfg', 'val_cfg', 'test_cfg', 'auto_scale_lr',
    'optim_wrapper', 'param_scheduler', 'val_evaluator', 'test_evaluator',
    'default_hooks', 'custom_hooks', 'data_preprocessor', 'load_from',
    'resume', 'launcher', 'env_cfg', 'log_processor', 'log_level',
    'visualizer', 'default_scope', 'randomness', 'experiment_name',
    'model_wrapper_cfg', 'sync_bn', 'find_unused_parameters',
    'activation_checkpointing', 'efficient_conv_bn_eval', 'compile')
# yapf: enable

# Keys uno's tools and Runner wrapper read. Extend it here (or, from a
# project, by rebinding ``config_check.UNO_TOP_LEVEL_KEYS += ('key',)``).
UNO_TOP_LEVEL_KEYS = ('objectives', 'tokenizer', 'custom_imports', 'strategy',
                      'runner_type', 'benchmark', 'load_strict')


class Slot(NamedTuple):
    """Where the components of one config path are looked up.

    Args:
        registries (tuple): Registries searched in order.
        builder_keys (tuple): Keys a builder pops before calling the class.
            Defaults to ``()``.
    """
    registries: Tuple[Registry, ...]
    builder_keys: Tuple[str, ...] = ()


_HOOK = Slot((HOOKS, ), ('priority', ))
_SCHEDULER = Slot((mm.PARAM_SCHEDULERS, ), ('convert_to_iter_based', ))
_EVALUATOR = Slot((EVALUATORS, mm.EVALUATOR))
_OPTIM_WRAPPER = Slot((OPTIM_WRAPPERS, ), ('constructor', 'paramwise_cfg'))

# Path patterns -> slot; first match wins. Segments are matched with
# ``fnmatch`` (``*`` matches any one key or list index, ``*_dataloader``
# any dataloader); ``**`` matches any number of segments.
COMPONENT_SLOTS = {
    'model': Slot((MODELS, )),
    'model.data_preprocessor': Slot((MODELS, )),
    'data_preprocessor': Slot((MODELS, )),
    'model.*_encoder': Slot((ENCODERS, )),
    'model.attention': Slot((ATTENTION, )),
    'tokenizer': Slot((TOKENIZERS, )),
    '**.tokenizer': Slot((TOKENIZERS, )),
    'objectives.*': Slot((OBJECTIVES, )),
    '*_dataloader.sampler': Slot((DATA_SAMPLERS, )),
    '*_dataloader.batch_sampler': Slot((DATA_SAMPLERS, )),
    '*_dataloader.collate_fn': Slot((FUNCTIONS, )),
    '*_dataloader.worker_init_fn': Slot((FUNCTIONS, )),
    '*_dataloader.**.pipeline.*': Slot((TRANSFORMS, )),
    '*_dataloader.**.dataset': Slot((DATASETS, )),
    '*_dataloader.**.datasets.*': Slot((DATASETS, )),
    'default_hooks.*': _HOOK,
    'custom_hooks.*': _HOOK,
    'optim_wrapper': _OPTIM_WRAPPER,
    'optim_wrapper.optimizer': Slot((mm.OPTIMIZERS, )),
    'param_scheduler': _SCHEDULER,
    'param_scheduler.*': _SCHEDULER,
    'visualizer': Slot((mm.VISUALIZERS, )),
    'visualizer.vis_backends.*': Slot((VISBACKENDS, )),
    'train_cfg': Slot((LOOPS, )),
    'val_cfg': Slot((LOOPS, )),
    'test_cfg': Slot((LOOPS, )),
    '*_evaluator': _EVALUATOR,
    '*_evaluator.*': _EVALUATOR,
    '*_evaluator.metrics.*': _EVALUATOR,
    'log_processor': Slot((mm.LOG_PROCESSORS, )),
    'model_wrapper_cfg': Slot((mm.MODEL_WRAPPERS, )),
    'strategy': Slot((mm.STRATEGIES, )),
}


class PlainSlot(NamedTuple):
    """A dict without ``type`` that a builder passes to a known callable.

    Args:
        target (callable): What receives the remaining keys.
        builder_keys (tuple): Keys the builder pops before the call.
    """
    target: Callable
    builder_keys: Tuple[str, ...] = ()


# Path patterns (as in COMPONENT_SLOTS) -> plain slot. mmengine 0.10.7's
# ``Runner.build_dataloader`` pops these keys and passes the rest to
# torch's ``DataLoader``.
PLAIN_SLOTS = {
    '*_dataloader':
    PlainSlot(DataLoader,
              ('dataset', 'sampler', 'batch_sampler', 'collate_fn',
               'worker_init_fn', 'num_batch_per_epoch',
               'disable_subprocess_warning')),
}

# ``<class name>.<parameter>`` -> dotted path of the callable whose
# parameters are the keys of that untyped dict, for classes that declare a
# ``config_schema`` but no ``config_schema_types``.
SCHEMA_TYPES = {
    'UnoModel.llm': 'uno.models.mot.config.MoTConfig',
    'UnoModel.metaquery': 'uno.models.metaquery.MetaQueryTokens',
}

# Keys of a component dict that are never arguments of the class.
_RESERVED_KEYS = ('type', '_scope_')
# What a constructor raises on a bad argument: turned into UnoConfigError
# by config_build_errors.
BUILD_ERRORS = (ValueError, TypeError, KeyError, IndexError)
_KIND_NAMES = dict(int='an int', float='a float', bool='a bool')


class _Missing:
    """Sentinel of :func:`config_diff` for a key absent on one side."""

    def __repr__(self) -> str:
        return '<missing>'


MISSING = _Missing()


def validate_config(cfg) -> None:
    """Check top-level keys, component types and component arguments.

    Args:
        cfg (Config | dict): A resolved config.

    Raises:
        UnoConfigError: One line naming the offending key path and the
            closest valid names, or the allowed range of a numeric value
            (:mod:`uno.utils.config_ranges`).
    """
    check_top_level(cfg)
    check_form(cfg)
    check_components(cfg)  # types first: 'eight' is not an int
    check_ranges(cfg)


def check_top_level(cfg) -> None:
    """Raise if ``cfg`` has a top-level key that nothing reads.

    Args:
        cfg (Config | dict): A resolved config.
    """
    allowed = set(MMENGINE_TOP_LEVEL_KEYS) | set(UNO_TOP_LEVEL_KEYS)
    for key in _as_dict(cfg):
        if key.startswith('_') or key in allowed:
            continue
        raise UnoConfigError(f"unknown top-level config key '{key}': "
                             f'{did_you_mean(key, allowed)}')


def check_components(cfg) -> None:
    """Raise on the first unknown component type or argument in ``cfg``.

    Args:
        cfg (Config | dict): A resolved config.
    """
    _import_mmengine_components()
    _walk(_as_dict(cfg), ())


def config_diff(a, b) -> List[Tuple[str, Any, Any]]:
    """Flattened keys whose values differ between two configs.

    Dicts are flattened to dotted keys, and so are lists that hold a dict
    (``pipeline.1.size``); other lists and tuples are compared whole.
    Top-level private ``_`` variables are left out: their effect already
    shows where they are used.

    Args:
        a (Config | dict): The old config.
        b (Config | dict): The new config.

    Returns:
        list[tuple]: ``(key, old, new)`` sorted by key, where ``old`` or
        ``new`` is :data:`MISSING` for a key present on one side only.
    """
    flat_a, flat_b = _flatten(_as_dict(a)), _flatten(_as_dict(b))
    keys = sorted(set(flat_a) | set(flat_b), key=_natural_key)
    diff = []
    for key in keys:
        old, new = flat_a.get(key, MISSING), flat_b.get(key, MISSING)
        if old is MISSING or new is MISSING or old != new:
            diff.append((key, old, new))
    return diff


def _as_dict(cfg) -> dict:
    return cfg.to_dict() if hasattr(cfg, 'to_dict') else dict(cfg)


def _flatten(value, prefix: str = '') -> dict:
    if isinstance(value, dict) and value:
        items = value.items()
    elif isinstance(value, list) and any(isinstance(v, dict) for v in value):
        items = enumerate(value)
    else:
        return {prefix: value}
    flat = {}
    for key, sub in items:
        if not prefix and str(key).startswith('_'):
            continue
        flat.update(_flatten(sub, f'{prefix}.{key}' if prefix else str(key)))
    return flat


def _natural_key(key: str) -> tuple:
    return tuple(
        (0, int(p), '') if p.isdigit() else (1, 0, p) for p in key.split('.'))


def _walk(value, path: Tuple[str, ...]) -> None:
    if isinstance(value, dict):
        if 'type' in value and path:
            _check_component(value, path)
        elif path:
            _check_plain(value, path)
        for key, sub in value.items():
            if not path and str(key).startswith('_'):
                # private variables are checked where they are used
                continue
            _walk(sub, path + (str(key), ))
    elif isinstance(value, (list, tuple)):
        for i, sub in enumerate(value):
            _walk(sub, path + (str(i), ))


def _check_component(cfg: dict, path: Tuple[str, ...]) -> None:
    where = '.'.join(path)
    slot = _slot_for(path)
    obj_type = cfg['type']
    if isinstance(obj_type, str):
        registries = slot.registries if slot else _all_registries()
        label = f"registry '{_label(registries[0])}'" if slot else (
            'any registry')
        obj = _lookup(obj_type, registries, where, label)
    elif callable(obj_type):
        obj = obj_type
    else:
        raise UnoConfigError(
            f'type at {where}.type must be a registered name or a class, '
            f'got {type(obj_type).__name__}')
    _check_arguments(cfg, obj, where, slot)


def _check_plain(cfg: dict, path: Tuple[str, ...]) -> None:
    """Check a dict without ``type`` that a builder passes to a callable."""
    plain = next((slot for pattern, slot in PLAIN_SLOTS.items()
                  if _match(tuple(pattern.split('.')), path)), None)
    if plain is None:
        return
    where = '.'.join(path)
    name = getattr(plain.target, '__name__', repr(plain.target))
    params = _accepted_parameters(plain.target, None)
    if params is not None:
        allowed = params | set(plain.builder_keys)
        for key in cfg:
            if key not in allowed:
                raise UnoConfigError(
                    f"unknown key '{key}' at {where} (read by the runner "
                    f'and {name}): {did_you_mean(key, allowed)}')
    _check_values(cfg, plain.target, where)


def _slot_for(path: Tuple[str, ...]) -> Optional[Slot]:
    for pattern, slot in COMPONENT_SLOTS.items():
        if _match(tuple(pattern.split('.')), path):
            return slot
    return None


def _match(pattern: Tuple[str, ...], path: Tuple[str, ...]) -> bool:
    if not pattern:
        return not path
    if pattern[0] == '**':
        return any(_match(pattern[1:], path[i:]) for i in range(len(path) + 1))
    return bool(path) and fnmatchcase(path[0], pattern[0]) and _match(
        pattern[1:], path[1:])


def _lookup(name: str, registries: Sequence[Registry], where: str, label: str):
    for registry in registries:
        _import_locations(registry, where)
        try:
            obj = registry.get(name)
        except RuntimeError:  # a dotted name that does not import
            obj = None
        if obj is not None:
            return obj
    names = set()
    for registry in registries:
        for r in _chain(registry):
            names.update(r.module_dict)
    raise UnoConfigError(f"unknown type '{name}' at {where}.type ({label}): "
                         f'{did_you_mean(name, names)}')


def _check_arguments(cfg: dict, obj, where: str, slot: Optional[Slot]):
    name = getattr(obj, '__name__', repr(obj))
    params = _accepted_parameters(obj, slot)
    if params is not None:
        allowed = params | set(getattr(obj, 'config_extra_keys', ()))
        allowed |= set(slot.builder_keys if slot else ())
        for key in cfg:
            if key not in allowed and key not in _RESERVED_KEYS:
                hint = (
                    did_you_mean(key, allowed)
                    if allowed else 'it takes no arguments here.')
                raise UnoConfigError(
                    f"unknown argument '{key}' of {name} at {where}: {hint}")
    _check_values(cfg, obj, where)
    schema = getattr(obj, 'config_schema', None) or {}
    for param, sub_keys in schema.items():
        sub = cfg.get(param)
        if not isinstance(sub, dict) or 'type' in sub:
            continue
        for key in sub:
            if key not in sub_keys:
                raise UnoConfigError(
                    f"unknown key '{key}' of {name}.{param} at "
                    f'{where}.{param}: {did_you_mean(key, sub_keys)}')
        target = _schema_target(obj, param)
        if target is not None:
            _check_values(sub, target, f'{where}.{param}')


def _schema_target(obj, param: str) -> Optional[Callable]:
    """The callable that receives the keys of ``obj``'s schema dict."""
    target = (getattr(obj, 'config_schema_types', None) or {}).get(param)
    if target is None:
        target = SCHEMA_TYPES.get(f"{getattr(obj, '__name__', '')}.{param}")
    if isinstance(target, str):
        module, _, attr = target.rpartition('.')
        try:
            target = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            return None
    return target


def _check_values(cfg: dict, obj, where: str) -> None:
    """Raise if a scalar parameter of ``obj`` is given a wrong type."""
    kinds = _value_kinds(obj)
    name = getattr(obj, '__name__', repr(obj))
    for key, value in cfg.items():
        if key not in kinds or value is None:
            continue
        kind, annotated = kinds[key]
        if isinstance(value, str):
            problem = 'is a str'
        elif (kind == 'int' and annotated and isinstance(value, float)
              and not value.is_integer()):
            problem = 'is not a whole number'
        else:
            continue
        raise UnoConfigError(f'{where}.{key}={value!r} {problem}, but {name} '
                             f'expects {_KIND_NAMES[kind]} there')


def _value_kinds(obj) -> Dict[str, Tuple[str, bool]]:
    """``{parameter: (kind, annotated)}`` for the scalar parameters of
    ``obj``; kind is ``'int'``, ``'float'`` or ``'bool'``, from the
    annotation, else from the default (``annotated`` is then False)."""
    try:
        params = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):
        return {}
    hints = _type_hints(obj)
    kinds = {}
    for p in params:
        if p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            continue
        annotation = hints.get(p.name, p.annotation)
        if annotation is not p.empty:
            kind = _string_kind(annotation) if isinstance(
                annotation, str) else _annotation_kind(annotation)
            if kind is not None:
                kinds[p.name] = (kind, True)
            continue
        for kind, cls in (('bool', bool), ('int', int), ('float', float)):
            if isinstance(p.default, cls):
                kinds[p.name] = (kind, False)
                break
    return kinds


def _type_hints(obj) -> dict:
    """Resolved annotations of ``obj``'s constructor (or of the function);
    {} when they do not resolve."""
    targets = [obj.__init__] if inspect.isclass(obj) else [obj]
    if dataclasses.is_dataclass(obj):
        targets.append(obj)  # the fields, if __init__'s do not resolve
    for target in targets:
        try:
            return typing.get_type_hints(target)
        except Exception:  # unresolvable forward references, builtins
            continue
    return {}


def _string_kind(text: str) -> Optional[str]:
    """:func:`_annotation_kind` of an unresolved string annotation such as
    ``'int | None'`` or ``'Optional[float]'``."""
    text = text.replace(' ', '').replace('typing.', '')
    optional = re.fullmatch(r'Optional\[(\w+)\]', text)
    parts = [optional.group(1)] if optional else [
        p for p in text.split('|') if p != 'None'
    ]
    if len(parts) == 1 and parts[0] in _KIND_NAMES:
        return parts[0]
    return 'float' if sorted(parts) == ['float', 'int'] else None


def _annotation_kind(annotation) -> Optional[str]:
    """``'int'``, ``'float'`` or ``'bool'`` for a scalar annotation (or an
    ``Optional`` of one), None for anything else."""
    origin = typing.get_origin(annotation)
    union_type = getattr(types, 'UnionType', None)
    if origin is typing.Union or (union_type and origin is union_type):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            annotation = args[0]
        elif set(args) == {int, float}:
            return 'float'
        else:
            return None
    return {bool: 'bool', int: 'int', float: 'float'}.get(annotation) \
        if isinstance(annotation, type) else None


def _accepted_parameters(obj, slot: Optional[Slot]) -> Optional[set]:
    """Parameter names ``obj`` accepts from a config, ``None`` for any."""
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):  # builtins without a signature
        return None
    params = list(signature.parameters.values())
    registries = slot.registries if slot else ()
    in_functions = any(mm.FUNCTIONS in _chain(r) for r in registries)
    if in_functions and not inspect.isclass(obj) and params:
        # FUNCTIONS are bound with ``partial(fn, **cfg)``; the first
        # positional argument is the batch (or worker id) at call time.
        if params[0].kind in (params[0].POSITIONAL_ONLY,
                              params[0].POSITIONAL_OR_KEYWORD):
            params = params[1:]
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {
        p.name
        for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def _chain(registry: Optional[Registry]):
    """The registry and its parents: what ``registry.get`` searches."""
    while registry is not None:
        yield registry
        registry = registry.parent


def _label(registry: Registry) -> str:
    return f'{registry.scope}.{registry.name}'


def _import_locations(registry: Registry, where: str) -> None:
    """Run the registry's lazy import; a broken module is a config error."""
    try:
        registry.import_from_location()
    except Exception as e:
        first = (str(e).splitlines() or [''])[0]
        raise UnoConfigError(
            f"cannot look up the type at {where}.type: registry "
            f"'{_label(registry)}' failed to import {registry._locations}: "
            f'{type(e).__name__}: {first}') from e


def _all_registries() -> List[Registry]:
    """Every uno registry, then every mmengine root registry."""
    found = [v for v in vars(uno_registry).values() if isinstance(v, Registry)]
    roots = [v for v in vars(mm).values() if isinstance(v, Registry)]
    unique = {}
    for registry in found + roots:
        unique.setdefault(id(registry), registry)
    return list(unique.values())


def _import_mmengine_components() -> None:
    """Register mmengine's classes: its root registries have no locations.

    ``mmengine.runner`` imports hooks, loops, optimizers, schedulers,
    datasets, evaluators and visualizers; strategies live apart.
    """
    import mmengine._strategy  # noqa: F401
    import mmengine.runner  # noqa: F401


@contextlib.contextmanager
def config_build_errors(
        get_cfg: Callable[[], Any] = lambda: None) -> Iterator[None]:
    """Report argument errors raised while building components as config
    errors.

    A ``ValueError``, ``TypeError``, ``KeyError`` or ``IndexError`` that
    leaves the ``with`` block and was raised inside a registry build (the
    constructor of a component built from a config dict, or the build
    itself: mmengine's ``build_from_cfg``) becomes an
    :class:`UnoConfigError` naming the component, its path in the config
    (when found) and the original message; an unexpected keyword argument
    gets the closest parameter names of the class and its bases. The
    innermost build is named. Errors raised outside a registry build (a
    training step, a hook) are left alone, and so are other exception
    types (a missing file, CUDA out of memory). Nothing is patched: the
    build is found in the exception's traceback.

    Args:
        get_cfg (callable): Returns the loaded config, where component
            paths are looked up; None leaves them out. Defaults to a
            function returning None.
    """
    try:
        yield
    except UnoConfigError:
        raise
    except BUILD_ERRORS as exc:
        build = innermost_build(exc)
        if build is None:
            raise
        raise build_error(build[0], build[1], exc, get_cfg()) from exc


def innermost_build(exc: BaseException) -> Optional[Tuple[Registry, Any]]:
    """``(registry, cfg)`` of the innermost ``build_from_cfg`` call that
    ``exc`` passed through (from its traceback), or None."""
    found = None
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code is build_from_cfg.__code__:
            found = (frame.f_locals.get('registry'),
                     frame.f_locals.get('cfg'))
        tb = tb.tb_next
    return found


def build_error(registry: Registry, cfg, exc: BaseException,
                root=None) -> UnoConfigError:
    """The one-line :class:`UnoConfigError` of a failed build.

    Args:
        registry (Registry): The registry that built.
        cfg (dict): The config dict it was given.
        exc (BaseException): What the build raised.
        root (Config | dict, optional): The whole config, to find the path
            of ``cfg`` in. Defaults to None.

    Returns:
        UnoConfigError: ``cannot build <Type> at <path> (<Error>): <msg>``.
    """
    obj_type = cfg.get('type') if isinstance(cfg, dict) else None
    obj = obj_type
    if isinstance(obj_type, str):
        with contextlib.suppress(Exception):
            obj = registry.get(obj_type)
    name = _type_name(obj if obj is not None else obj_type) or (
        f"a '{registry.name}' component")
    path = find_component(root, cfg) if root is not None else None
    at = f' at {path}' if path else ''
    message = ' '.join(
        line.strip() for line in str(exc).splitlines() if line.strip())
    if len(message) > 600:
        message = message[:600] + '...'
    hint = ''
    unexpected = re.search(r"unexpected keyword argument '(\w+)'", message)
    if unexpected and inspect.isclass(obj):
        names = set()
        for cls in obj.__mro__:
            if '__init__' in vars(cls):
                names |= _accepted_parameters(cls.__init__, None) or set()
        names.discard('self')
        if names:
            hint = '; ' + did_you_mean(unexpected.group(1), names)
    return UnoConfigError(f'cannot build {name}{at} '
                          f'({type(exc).__name__}): {message}{hint}')


def find_component(root, cfg) -> Optional[str]:
    """The dotted path of the component dict of ``root`` that ``cfg`` was
    built from, or None.

    A component matches when its type names the same class and every key
    it sets has the same value in ``cfg`` (builders may add keys, such as
    an optimizer's ``params``). The first match in config order wins.

    Args:
        root (Config | dict): The whole config.
        cfg (dict): The dict given to a registry build.
    """
    if not isinstance(cfg, dict) or 'type' not in cfg:
        return None
    want = _type_name(cfg['type'])
    for path, comp in _components(_as_dict(root), ()):
        if _type_name(comp['type']) != want:
            continue
        try:
            same = all(
                k in cfg and bool(cfg[k] == v) for k, v in comp.items()
                if k not in _RESERVED_KEYS)
        except Exception:  # values that do not compare (tensors)
            same = False
        if same:
            return '.'.join(path) or None
    return None


def _components(value, path: Tuple[str, ...]):
    """Yield ``(path, dict)`` for every dict with a ``type`` in ``value``."""
    if isinstance(value, dict):
        if 'type' in value and path:
            yield path, value
        for key, sub in value.items():
            yield from _components(sub, path + (str(key), ))
    elif isinstance(value, (list, tuple)):
        for i, sub in enumerate(value):
            yield from _components(sub, path + (str(i), ))


def _type_name(obj_type) -> Optional[str]:
    """``'uno.FlowMatchingObjective'`` or the class -> its bare name."""
    if isinstance(obj_type, str):
        return obj_type.rsplit('.', 1)[-1]
    return getattr(obj_type, '__name__', None)
