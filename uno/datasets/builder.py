"""Helpers datasets share: tokenizer building, image conversion, plan
options in dataset configs."""
import inspect
from typing import Union

import numpy as np
import torch

from uno.errors import UnoConfigError
from uno.registry import DATASETS, TOKENIZERS


def build_tokenizer(tokenizer: Union[dict, object]):
    """Build a tokenizer from a TOKENIZERS config, or pass one through."""
    if isinstance(tokenizer, dict):
        return TOKENIZERS.build(tokenizer)
    return tokenizer


def to_tensor_image(image: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 -> ``(3, H, W)`` float32 in ``[-1, 1]``."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    return x.float().div_(127.5).sub_(1.0)


def to_uint8_image(image: torch.Tensor) -> np.ndarray:
    """``(3, H, W)`` in ``[-1, 1]`` -> ``(H, W, 3)`` uint8."""
    x = (image.detach().float().clamp(-1, 1) + 1) * 127.5
    return x.round().byte().permute(1, 2, 0).cpu().numpy()


def inject_plan_options(dataset, uno: dict, where: str) -> None:
    """Give every dataset config that takes ``uno=`` the plan options
    ``build_runner`` derives from the objectives (``plan_options``).

    A dataset that sets ``uno`` explicitly keeps it, but its metaquery
    count must match the model's.
    """
    if not isinstance(dataset, dict):
        return
    children = dataset.get('datasets') or []
    if isinstance(children, dict):  # MixtureDataset: keyed by name
        children = list(children.values())
    for child in [dataset.get('dataset')] + list(children):
        inject_plan_options(child, uno, where)
    cls = DATASETS.get(dataset.get('type')) if isinstance(
        dataset.get('type'), str) else dataset.get('type')
    if cls is None or 'uno' not in inspect.signature(cls).parameters:
        return
    if dataset.get('uno') is None:
        dataset['uno'] = dict(uno)
    elif uno['num_queries'] and dataset['uno'].get(
            'num_queries', 0) != uno['num_queries']:
        raise UnoConfigError(
            f"{where}.dataset.uno.num_queries="
            f"{dataset['uno'].get('num_queries', 0)} differs from "
            f"model.metaquery.num_queries={uno['num_queries']}; leave "
            'dataset.uno out to derive it from the model')
