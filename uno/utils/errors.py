"""Errors that name what is wrong and what was probably meant.

Every user-facing failure of uno (a misspelt config key, an unknown
registry type, a bad argument) raises :class:`UnoConfigError` with a single
line that names the offending key and the closest valid names, so the tools
can print it without a traceback.
"""
import difflib
from typing import Iterable, List


class UnoConfigError(ValueError):
    """A configuration is invalid; the message is one self-contained line."""


class BackendUnavailableError(UnoConfigError, RuntimeError):
    """A configured backend cannot do what the run asks of it on this
    machine (e.g. train with ``flex`` attention on the CPU).

    It is found only when the backend is used, so it is a RuntimeError for
    the code that calls the backend, and a configuration error (one line,
    exit status 2) for the tools.
    """


def close_matches(name: str, candidates: Iterable[str],
                  n: int = 3) -> List[str]:
    """Return up to ``n`` candidates that look like ``name``.

    Case is ignored for the comparison, and a candidate that contains
    ``name`` (or is contained in it) counts as close even when difflib's
    ratio is low, e.g. ``'flow'`` for ``'FlowMatchingObjective'``.
    """
    candidates = sorted(set(str(c) for c in candidates))
    lowered = {c.lower(): c for c in candidates}
    hits = difflib.get_close_matches(
        name.lower(), list(lowered), n=n, cutoff=0.6)
    matches = [lowered[h] for h in hits]
    if len(matches) < n and len(name) >= 3:
        for c in candidates:
            if c in matches:
                continue
            if name.lower() in c.lower() or c.lower() in name.lower():
                matches.append(c)
            if len(matches) >= n:
                break
    return matches


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """Format the ``did you mean`` tail of an error message."""
    candidates = list(candidates)
    matches = close_matches(name, candidates)
    if matches:
        return 'did you mean ' + ' or '.join(repr(m) for m in matches) + '?'
    if not candidates:
        return 'nothing is registered there.'
    shown = sorted(candidates)[:12]
    more = '' if len(candidates) <= 12 else f' (+{len(candidates) - 12} more)'
    return 'valid names: ' + ', '.join(shown) + more


class TrainingStopped(RuntimeError):
    """A run stopped on purpose (e.g. too many non-finite losses); the
    message says why and where the last good checkpoint is."""
