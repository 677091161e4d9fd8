"""Dense attribute supervision of the understanding encoder's tokens.

BAGEL's understanding encoder (SigLIP) arrives pretrained; the CPU world
has no pretrained vision encoder, and a small ViT trained from scratch by
captioning alone learns colour in minutes but not shape: the shape of a
7-pixel object is a weak, sparse signal behind a language model. This
objective plays the role of the encoder's pretraining: a linear head per
attribute classifies every ViT token (shape, colour, size of the object
covering it, or "none"; and, in a two-object scene, that object's spatial
relation to the other one), with labels the procedural world knows exactly
(:func:`uno.datasets.shapesworld.token_attributes`, given by
``ShapesWorldCaptionDataset(token_labels=stride)``).

``view='latent'`` supervises the generation expert's hidden states of
*clean latent* tokens instead (at one decoder layer): the path the und
expert reads when it captions from generation tokens, which captioning
alone teaches colour but hardly shape. ``view='noisy'`` does the same on
the *noisy* latents of text-to-image samples up to ``max_t`` (a dense,
REPA-like signal: what the image being generated will show under each
token), which gives the generation stage many more labelled tokens. Used
in the pretraining stages only; post-training never sees it.
"""
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from uno.datasets.shapesworld import TOKEN_ATTRIBUTES
from uno.models.outputs import ModelOutputs
from uno.registry import OBJECTIVES
from uno.structures import NoisyLatents, PackedBatch
from uno.errors import UnoConfigError
from .base import BaseObjective, ObjectiveResult

# the rows of the labels and their classes besides "none" (class 0)
ATTRIBUTES = {name: len(values) for name, values in TOKEN_ATTRIBUTES.items()}


@OBJECTIVES.register_module()
class TokenAttributeObjective(BaseObjective):
    """Per-token attribute cross-entropy on the understanding encoder.

    The loss sums the cross-entropy of every attribute over every ViT token
    that has labels; the count is tokens x attributes.

    Args:
        weight (float): Loss weight. Defaults to 1.0.
        attributes (Sequence[str]): Rows of the labels to supervise, of
            ``('shape', 'color', 'size', 'relation')``. Defaults to all.
        view (str): ``'vit'``: the understanding encoder's features of
            ViT tokens; ``'latent'``: the hidden states of clean latent
            tokens after decoder layer ``layer``; ``'noisy'``: those of
            noisy latent tokens at ``t <= max_t``. Defaults to ``'vit'``.
        layer (int): 1-based decoder layer of the latent views. Defaults
            to 2.
        max_t (float): Largest timestep of the noisy view's tokens.
            Defaults to 1.0.
    """
    requires = ('vit_features', )

    def __init__(self, weight: float = 1.0,
                 attributes: Sequence[str] = tuple(ATTRIBUTES),
                 view: str = 'vit', layer: int = 2, max_t: float = 1.0):
        super().__init__(weight)
        if view not in ('vit', 'latent', 'noisy'):
            raise ValueError(f"view must be 'vit', 'latent' or 'noisy', got "
                             f'{view!r}')
        if view != 'vit':
            self.requires, self.requires_layers = (), (int(layer), )
        self.view, self.layer, self.max_t = view, int(layer), float(max_t)
        # the noisy view reads the flow objective's noisy latents
        self.needs_noisy_latents = view == 'noisy'
        unknown = [a for a in attributes if a not in ATTRIBUTES]
        if unknown or not attributes:
            raise ValueError(f'attributes must be some of '
                             f'{tuple(ATTRIBUTES)}, got {list(attributes)}')
        self.attributes = tuple(attributes)
        self.heads = nn.ModuleDict()

    def setup(self, model: nn.Module) -> None:
        if self.weight == 0:
            return
        if self.view != 'vit':
            num_layers = model.cfg.num_layers
            if not 1 <= self.layer <= num_layers:
                raise UnoConfigError(
                    f'TokenAttributeObjective layer {self.layer} is not a '
                    f'decoder layer (1..{num_layers})')
            dim = model.cfg.hidden_size
        elif model.und_encoder is None:
            raise UnoConfigError('TokenAttributeObjective supervises the '
                                 'understanding encoder: set '
                                 'model.und_encoder')
        else:
            dim = model.und_encoder.feature_dim
        self.heads = nn.ModuleDict({
            a: nn.Linear(dim, ATTRIBUTES[a] + 1) for a in self.attributes})

    def _index(self, batch: PackedBatch) -> torch.Tensor:
        """``(N,)`` packed positions of the supervised view's tokens."""
        if self.view == 'latent':
            return batch.clean_index
        return batch.noisy_index if self.view == 'noisy' else batch.vit_index

    def labels(self, batch: PackedBatch,
               noisy: Optional[NoisyLatents] = None) -> torch.Tensor:
        """``(A, N)`` labels of the view's tokens on ``batch.device``; -1
        where the loss does not apply (no labels, or ``t > max_t``)."""
        labels = self._labels(batch, self._index(batch)).to(batch.device)
        if self.view == 'noisy' and self.max_t < 1.0 and labels.numel():
            t = noisy.token_timesteps(batch.noisy_group)  # (N,)
            labels[:, t.to(labels.device) > self.max_t] = -1
        return labels

    def count(self, batch: PackedBatch,
              noisy: Optional[NoisyLatents] = None,
              state=None) -> torch.Tensor:
        """Labelled tokens x supervised attributes."""
        keep = self.labels(batch, noisy)[0] >= 0  # (N,)
        return keep.sum().float() * len(self.attributes)

    def forward(self, outputs: ModelOutputs, batch: PackedBatch,
                noisy: Optional[NoisyLatents] = None,
                state=None) -> ObjectiveResult:
        index = self._index(batch)
        if self.view != 'vit':
            feats = outputs.layers[self.layer][index]  # (N, D)
        else:
            feats = outputs.vit_features  # (N, C)
        count = self.count(batch, noisy, state)
        if feats is None or feats.shape[0] == 0:
            return ObjectiveResult(outputs.hidden.new_zeros(()), count)
        labels = self.labels(batch, noisy).to(feats.device)  # (A, N)
        keep = labels[0] >= 0  # tokens of samples with labels
        rows = {name: i for i, name in enumerate(ATTRIBUTES)}
        total = feats.new_zeros(())
        logs = {}
        for name in self.attributes:
            logits = self.heads[name](feats[keep]).float()  # (N, K + 1)
            target = labels[rows[name], keep]
            total = total + F.cross_entropy(logits, target, reduction='sum')
            with torch.no_grad():  # accuracy on object tokens
                obj = target > 0
                hit = (logits.argmax(-1) == target)[obj].float()
                logs[f'acc_{name}'] = hit.mean() if obj.any() else \
                    hit.new_ones(())
        return ObjectiveResult(total, count, logs=logs)

    def _labels(self, batch: PackedBatch, index: torch.Tensor) -> torch.Tensor:
        """``(A, N)`` labels of the tokens at ``index`` (in that order); -1
        for the tokens of samples that carry none."""
        samples = batch.sample_ids[index].cpu()  # (N,)
        labels = torch.full((len(ATTRIBUTES), samples.numel()), -1,
                            dtype=torch.long)
        for b in samples.unique().tolist():
            meta = batch.meta[b] if batch.meta else {}
            lab = meta.get('token_labels')
            if lab is None:
                continue
            where = (samples == b).nonzero().squeeze(1)
            if lab.shape[1] != where.numel():
                raise UnoConfigError(
                    f'sample {b} has {where.numel()} {self.view} tokens but '
                    f'{lab.shape[1]} token labels: set the dataset\'s '
                    'token_labels to the encoder\'s stride')
            labels[:, where] = torch.as_tensor(lab)
        return labels
