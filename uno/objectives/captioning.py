"""Captioning: next-token cross-entropy on caption tokens.

Under UNO the caption segment is read by the *frozen* understanding expert
from the noisy latents of the same sample (not from its prompt: prompt
masking), so the CE gradient flows through the shared attention into the
generation expert's hidden states of the noisy image. The same objective
trains plain image-to-caption understanding in pretraining. Captions are
re-phrasings of the scene, not the prompt, so the target is not a copy of
the condition.
"""
from typing import Optional, Sequence

import torch.nn.functional as F
from torch import Tensor

from uno.models.outputs import ModelOutputs
from uno.registry import OBJECTIVES
from uno.structures import NoisyLatents, PackedBatch
from .base import BaseObjective, ObjectiveResult, check_window, window_mask


@OBJECTIVES.register_module()
class CaptioningObjective(BaseObjective):
    """Next-token CE on every supervised text token (``ce_index``).

    Args:
        weight (float): Loss weight. Defaults to 1.0.
        timestep_window (Sequence[float], optional): ``(lo, hi)``: apply
            the loss only to samples whose noisy image has ``t`` in the
            window. Defaults to None (all).
        label_smoothing (float): CE label smoothing. Defaults to 0.0.
        noisy_captions (bool): Ask the data for UNO caption segments after
            every noisy image (read from the noisy latents). False trains
            only on the data's own supervised text, e.g. image-to-caption
            samples in pretraining. Defaults to True.
    """
    requires = ('ce_logits', )

    @property
    def needs_noisy_latents(self) -> bool:
        """UNO captions read the noisy latents; plain captions do not."""
        return bool(self.noisy_captions)

    def __init__(self,
                 weight: float = 1.0,
                 timestep_window: Optional[Sequence[float]] = None,
                 label_smoothing: float = 0.0,
                 noisy_captions: bool = True):
        super().__init__(weight)
        self.noisy_captions = noisy_captions
        self.timestep_window = check_window(timestep_window)
        self.label_smoothing = label_smoothing

    @classmethod
    def plan_options(cls, cfg: dict) -> dict:
        return dict(caption=bool(cfg.get('noisy_captions', True)))

    def kept(self, batch: PackedBatch,
             noisy: Optional[NoisyLatents] = None) -> Tensor:
        """``(N_ce,)`` bool: the supervised tokens the loss applies to."""
        return window_mask(batch, noisy, batch.ce_sample,
                           self.timestep_window)

    def count(self, batch: PackedBatch,
              noisy: Optional[NoisyLatents] = None, state=None) -> Tensor:
        """The supervised tokens in the timestep window."""
        return self.kept(batch, noisy).sum().float()

    def forward(self, outputs: ModelOutputs, batch: PackedBatch,
                noisy: Optional[NoisyLatents] = None,
                state=None) -> ObjectiveResult:
        labels = batch.ce_labels  # (N_ce,)
        keep = self.kept(batch, noisy)  # (N_ce,), summed: count()
        count = keep.sum().float()
        if outputs.ce_logits is None or labels.numel() == 0:
            return ObjectiveResult(outputs.hidden.new_zeros(()), count)
        ce = F.cross_entropy(
            outputs.ce_logits.float(), labels, reduction='none',
            label_smoothing=self.label_smoothing)  # (N_ce,)
        ce = ce * keep
        return ObjectiveResult(
            ce.sum(), count,
            per_item=ce.detach()[keep],
            item_sample=batch.ce_sample[keep])
