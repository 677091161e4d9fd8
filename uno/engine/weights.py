"""Weights: read uno's weight files inertly and check them against a model.

The one weight check of ``load_from``, ``--resume`` and the tools:
``docs/checkpoints.md``.
"""
import os.path as osp
import re
from typing import Dict, List, Sequence, Tuple

import torch
from torch import nn

from uno.errors import short_list
from .checkpoint import CheckpointError, load_checkpoint_file


def load_safetensors(path: str) -> Dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file (a format without code).

    Raises:
        CheckpointError: Missing, or not a complete safetensors file.
    """
    from safetensors.torch import load_file
    if not osp.isfile(path):
        raise CheckpointError(f'checkpoint {path} does not exist')
    try:
        return load_file(path)
    except Exception as e:  # SafetensorError: truncated, garbage
        raise CheckpointError(
            f'checkpoint {path} is damaged or not a safetensors file '
            f'(truncated, or a .pth renamed?): {e}') from e


def read_model_weights(path: str) -> Dict[str, torch.Tensor]:
    """:class:`~uno.models.UnoModel` weights, objective heads left out, of
    an exported ``.safetensors`` or a training ``.pth`` (read inert; its
    trainer's ``model.*`` entries).

    Raises:
        CheckpointError: Missing, a folder (export sharded checkpoints
            first), or unreadable.
    """
    path = str(path)
    if osp.isdir(path):
        raise CheckpointError(
            f'{path} is a folder (a sharded checkpoint?): export it with '
            'tools/misc/export_weights.py CKPT OUT.safetensors')
    if path.endswith('.safetensors'):
        state = load_safetensors(path)
    else:
        ckpt = load_checkpoint_file(path)
        state = ckpt.get('state_dict', ckpt)
        state = {re.sub(r'^module\.', '', k): v for k, v in state.items()}
        if any(k.startswith('model.') for k in state):  # a UnoTrainer's
            state = {k[len('model.'):]: v for k, v in state.items()
                     if k.startswith('model.')}
    return {k: v for k, v in state.items() if not k.startswith('objectives.')}


def state_dict_mismatch(model: nn.Module,
                        state_dict: Dict[str, torch.Tensor]) -> Dict:
    """Missing, unexpected, shape- and dtype-mismatched (integer for
    float) keys of ``state_dict``, and those holding NaN or inf."""
    own = model.state_dict()
    both = [(k, v, own[k]) for k, v in state_dict.items() if k in own]
    return dict(
        missing=sorted(set(own) - set(state_dict)),
        unexpected=sorted(set(state_dict) - set(own)),
        shape=[f'{k}: checkpoint {tuple(v.shape)} vs model '
               f'{tuple(w.shape)}' for k, v, w in both
               if tuple(v.shape) != tuple(w.shape)],
        # an integer tensor for a float weight (or back) is not a cast
        dtype=[f'{k}: checkpoint {v.dtype} vs model {w.dtype}'
               for k, v, w in both
               if v.is_floating_point() != w.is_floating_point()],
        nonfinite=[k for k, v in state_dict.items()
                   if v.is_floating_point() and v.device.type != 'meta'
                   and not bool(torch.isfinite(v).all())])


def mismatch_text(report: Dict[str, List[str]], n: int = 5) -> str:
    """One line of a :func:`state_dict_mismatch` report, ``n`` keys of
    each kind: ``'missing: a, b; shape: c: checkpoint (2,) vs ...'``."""
    return '; '.join(f'{kind}: {short_list(keys, n)}'
                     for kind, keys in report.items() if keys)


def check_weights(model: nn.Module, state_dict: Dict[str, torch.Tensor],
                  strict: bool = True, optional: Sequence[str] = (),
                  what: str = 'checkpoint',
                  hint: str = 'pass strict=False to load what matches'
                  ) -> Tuple[Dict, set]:
    """Check ``state_dict`` (meta tensors: shapes only) against ``model``.

    Args:
        optional (Sequence[str]): Key prefixes that may be missing,
            unexpected or resized (post-training parts): never an error,
            listed under ``'optional'``.
        what (str): Names the weights in the error.
        hint (str): The error's last words: how to relax the check.

    Returns:
        tuple: The :func:`state_dict_mismatch` report of the other keys
        (plus ``'optional'``), and the keys never to load: unexpected,
        resized, integer for float (or back), or holding NaN or inf.

    Raises:
        CheckpointError: With ``strict``, one line naming the mismatch.
    """
    report = state_dict_mismatch(model, state_dict)
    skip = {s.split(': checkpoint ')[0]
            for s in report['shape'] + report['dtype']}
    skip |= set(report['unexpected']) | set(report['nonfinite'])
    optional, spare = tuple(optional), []
    for kind in ('missing', 'unexpected', 'shape'):
        spare += [k for k in report[kind] if k.startswith(optional)]
        report[kind] = [k for k in report[kind]
                        if not k.startswith(optional)]
    if strict and any(report.values()):
        raise CheckpointError(f'{what} does not match the model: '
                              f'{mismatch_text(report)} ({hint})')
    return dict(report, optional=spare), skip


def load_model_weights(model: nn.Module,
                       state_dict: Dict[str, torch.Tensor],
                       strict: bool = True,
                       optional: Sequence[str] = (),
                       what: str = 'checkpoint',
                       hint: str = 'pass strict=False to load what matches'
                       ) -> Dict:
    """Load ``state_dict`` into ``model`` after :func:`check_weights`
    (same arguments); what does not match stays as built. Returns the
    mismatch report.

    Raises:
        CheckpointError: With ``strict``, on a mismatch outside
            ``optional``.
    """
    report, skip = check_weights(model, state_dict, strict, optional, what,
                                 hint)
    model.load_state_dict(
        {k: v for k, v in state_dict.items() if k not in skip}, strict=False)
    return report


def load_model_file(model: nn.Module, path: str,
                    optional: Sequence[str] = ('metaquery.', )) -> Dict:
    """Load the weights file ``path`` strictly but for ``optional``
    (post-training parts a pretraining checkpoint lacks): what the
    analysis tools load."""
    return load_model_weights(model, read_model_weights(path),
                              optional=optional, what=path,
                              hint='is it a checkpoint of this config?')
