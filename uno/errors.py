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


#: what gloo and NCCL say when a peer stalls past the timeout or dies
_COLLECTIVE_FAILURES = ('timed out', 'connection closed by peer',
                        'connection reset by peer', 'watchdog caught',
                        'nccl communicator was aborted', 'broken pipe')


def collective_failure(exc: BaseException) -> str:
    """One line for a collective that failed because another rank stalled
    past the timeout or died, or ``''`` when ``exc`` is something else.

    Only meaningful while a process group is initialised (the caller
    checks): a stalled rank makes gloo and NCCL raise a ``RuntimeError``
    (``DistBackendError``) after ``env_cfg.dist_cfg.timeout`` seconds, a
    dead one at once.
    """
    if not isinstance(exc, RuntimeError):
        return ''
    text = str(exc).strip()
    if not any(key in text.lower() for key in _COLLECTIVE_FAILURES):
        return ''
    import torch.distributed as dist
    rank = dist.get_rank() if dist.is_initialized() else '?'
    first = text.splitlines()[0] if text else type(exc).__name__
    if first.startswith('[') and '] ' in first:  # gloo's source location
        first = first.split('] ', 1)[1]
    first = first.split('. This is typically caused')[0]
    return (f'rank {rank}: a collective failed because another rank '
            f'stalled past the timeout (env_cfg.dist_cfg.timeout) or died '
            f'({first}); the first error is in that rank\'s log')
