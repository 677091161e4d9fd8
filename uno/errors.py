"""Errors that name what is wrong and what was probably meant.

Every user-facing failure of uno (a misspelt config key, an unknown
registry type, a bad argument) raises :class:`UnoConfigError` with a single
line that names the offending key and the closest valid names
(:func:`uno.utils.config_check.check_keys`), so the tools can print it
without a traceback.
"""


def short_list(items, n: int = 5) -> str:
    """``'a, b, c (+4 more)'``: the first ``n`` of ``items`` for a message.
    """
    items = [str(i) for i in items]
    more = f' (+{len(items) - n} more)' if len(items) > n else ''
    return ', '.join(items[:n]) + more


class UnoConfigError(ValueError):
    """A configuration is invalid; the message is one self-contained line."""


class BackendUnavailableError(UnoConfigError, RuntimeError):
    """A configured backend cannot do what the run asks of it on this
    machine (e.g. train with ``flex`` attention on the CPU).

    It is found only when the backend is used, so it is a RuntimeError for
    the code that calls the backend, and a configuration error (one line,
    exit status 2) for the tools.
    """


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
