"""Helpers datasets share: tokenizer building and image conversion."""
from typing import Union

import numpy as np
import torch

from uno.registry import TOKENIZERS


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
