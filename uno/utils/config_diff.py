"""Diff two configs as flattened dotted keys (``print_config.py --diff``)."""
from typing import Any, List, Tuple


class _Missing:
    """Sentinel of :func:`config_diff` for a key absent on one side."""

    def __repr__(self) -> str:
        return '<missing>'


MISSING = _Missing()


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
