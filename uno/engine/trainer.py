"""UnoTrainer: the mmengine-facing wrapper of model + objectives.

mmengine's Runner drives a ``BaseModel`` through ``train_step`` ->
``forward(mode=...)`` -> ``parse_losses``. That contract (mode strings,
losses summed by substring match) stays here, at the engine boundary:
:class:`~uno.models.UnoModel` returns named outputs only, and the
:class:`~uno.objectives.ObjectiveSet` computes the explicit weighted total.
``parse_losses`` is overridden so no logged key is ever summed by name.
"""
from typing import Dict, List, Optional, Union

import torch
from mmengine.model import BaseDataPreprocessor, BaseModel

from uno.objectives import ObjectiveSet
from uno.registry import MODELS
from uno.structures import PackedBatch


@MODELS.register_module()
class PackedBatchPreprocessor(BaseDataPreprocessor):
    """Moves a :class:`PackedBatch` to the model's device."""

    def forward(self, data: PackedBatch, training: bool = False) -> dict:
        if isinstance(data, dict) and 'batch' in data:
            data = data['batch']
        return dict(batch=data.to(self.device))


@MODELS.register_module()
class UnoTrainer(BaseModel):
    """Model and objectives as one mmengine ``BaseModel``.

    Args:
        model (dict): MODELS config of the unified model (``UnoModel``).
        objectives (dict): ``name -> OBJECTIVES config``.
        eval_seed (int): Seed of the noise used by ``val``/``test`` steps,
            so validation losses are comparable across checkpoints.
            Defaults to 0.
        data_preprocessor (dict, optional): Defaults to
            ``PackedBatchPreprocessor``.
    """

    def __init__(self,
                 model: dict,
                 objectives: Dict[str, dict],
                 eval_seed: int = 0,
                 data_preprocessor: Optional[dict] = None):
        super().__init__(data_preprocessor=data_preprocessor or dict(
            type='PackedBatchPreprocessor'))
        self.model = MODELS.build(model)
        self.objectives = ObjectiveSet(objectives)
        self.objectives.setup(self.model)
        self.eval_seed = eval_seed

    def forward(self,
                batch: PackedBatch,
                mode: str = 'loss',
                data_samples=None) -> Union[dict, List[dict]]:
        """``'loss'``: total and logs; ``'predict'``: per-sample metrics
        with fixed noise (validation)."""
        if mode == 'loss':
            total, logs = self.compute_loss(batch)
            return dict(loss=total, logs=logs)
        if mode == 'predict':
            return self.predict(batch)
        raise ValueError(f"mode must be 'loss' or 'predict', got {mode!r}")

    def compute_loss(self, batch: PackedBatch, generator=None):
        """One training forward: prepare -> model -> objectives."""
        self.objectives.prepare(self.model, batch, generator)
        outputs = self.model(
            batch, return_layers=self.objectives.requires_layers)
        return self.objectives(outputs, batch)

    @torch.no_grad()
    def predict(self, batch: PackedBatch) -> List[dict]:
        """Per-sample losses of every objective under fixed noise."""
        first = batch.meta[0].get('index', 0) if batch.meta else 0
        gen = torch.Generator(device=batch.device)
        gen.manual_seed(self.eval_seed * 1_000_003 + int(first))
        self.objectives.prepare(self.model, batch, gen)
        outputs = self.model(
            batch, return_layers=self.objectives.requires_layers)
        results = [dict(meta=m) for m in batch.meta]
        for name, values in self.objectives.per_sample(outputs,
                                                       batch).items():
            for b, value in enumerate(values.tolist()):
                results[b][f'loss/{name}'] = value
        return results

    def parse_losses(self, losses: dict):
        """The total is the ObjectiveSet's; logs are logged as they are."""
        return losses['loss'], losses['logs']
