"""UnoTrainer: model + objectives as the ``BaseModel`` mmengine drives.

mmengine's contract (``forward(mode=...)``, losses summed by name in
``parse_losses``) stays here: the model returns named outputs, the
:class:`~uno.objectives.ObjectiveSet` the explicit weighted total.
"""
from typing import Dict, List, Optional, Union

import torch
from mmengine.logging import MessageHub
from mmengine.model import BaseDataPreprocessor, BaseModel
from torch import Tensor, nn

from uno.models.sampling import Captioner, FlowSampler
from uno.objectives import ObjectiveSet, Prepared
from uno.registry import MODELS, TOKENIZERS
from uno.structures import PackedBatch
from uno.evaluation.benchmark_predict import predict_benchmark
from uno.utils.dist import all_reduce_sum
from uno.utils.seeding import derive_seed, derived_generator


@MODELS.register_module()
class PackedBatchPreprocessor(BaseDataPreprocessor):
    """Moves a :class:`PackedBatch` to the model's device."""

    def forward(self, data: PackedBatch, training: bool = False) -> dict:
        if isinstance(data, dict) and 'batch' in data:
            data = data['batch']
        if isinstance(data, list):  # benchmark items: moved when used
            return dict(batch=data)
        return dict(batch=data.to(self.device))


@MODELS.register_module()
class UnoTrainer(BaseModel):
    """Model and objectives as one mmengine ``BaseModel``.

    Args:
        model (dict): MODELS config of the unified model (``UnoModel``).
        objectives (dict): ``name -> OBJECTIVES config``.
        seed (int): Base seed of the noise: training noise is seeded by
            ``(seed, iteration, sample index)`` (exact resume, any rank or
            batch), validation noise by the sample index. Defaults to 0.
        tokenizer (dict, optional): TOKENIZERS config; the benchmarks
            need it. Defaults to None.
        sampler (dict, optional): :class:`FlowSampler` arguments of the
            benchmarks. Defaults to None (its defaults).
        captioner (dict, optional): :class:`Captioner` arguments of the
            understanding benchmark. Defaults to None (its defaults).
        data_preprocessor (dict, optional): Defaults to
            ``PackedBatchPreprocessor``.
    """

    def __init__(self,
                 model: dict,
                 objectives: Dict[str, dict],
                 seed: int = 0,
                 tokenizer: Optional[dict] = None,
                 sampler: Optional[dict] = None,
                 captioner: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None):
        # built from uno's registry here: outside a Runner there is no
        # default scope, and mmengine would search its root registry only
        super().__init__(data_preprocessor=MODELS.build(
            data_preprocessor or dict(type='PackedBatchPreprocessor')))
        self.model = MODELS.build(model)
        self.objectives = ObjectiveSet(objectives)
        self.objectives.setup(self.model)
        self.seed = seed
        self.tokenizer = None if tokenizer is None else \
            TOKENIZERS.build(tokenizer)
        self.sampler = FlowSampler(**(sampler or {}))
        self.captioner = Captioner(**(captioner or {}))
        self._skipped = self._streak = 0  # non-finite steps

    def train_step(self, data, optim_wrapper,
                   wrapper: Optional[nn.Module] = None) -> Dict[str, Tensor]:
        """One optimizer step over a batch or a list of micro-batches: the
        step of every wrapper (DDP and FSDP pass ``wrapper=self`` so the
        forwards run through them).

        Micro-batches are prepared first without gradients, so each is
        normalised by the counts of all of them on all ranks and the
        gradient is that of their union (see
        docs/distributed.md#gradient-accumulation); the update is
        :meth:`guarded_update`'s.

        Args:
            data: A batch (a :class:`PackedBatch` or ``dict(batch=...)``)
                or this rank's list of micro-batches.
            optim_wrapper (OptimWrapper): The optimizer wrapper.
            wrapper (nn.Module, optional): The wrapper to forward through.
                Defaults to None (this module).

        Returns:
            dict[str, Tensor]: The step's logs.
        """
        wrapper = self if wrapper is None else wrapper
        group = data if isinstance(data, list) else [data]
        batches = [self.data_preprocessor(d, True)['batch'] for d in group]
        # a single batch prepares in its forward, normalised by its counts
        prepared, counts = [None] * len(batches), None
        if len(batches) > 1:
            with torch.no_grad(), optim_wrapper.optim_context(wrapper):
                prepared = [wrapper(batch=b, mode='prepare')
                            for b in batches]
            counts = self.objectives.step_counts(batches, prepared)
        totals, logs = [], []
        for batch, prep in zip(batches, prepared):
            with optim_wrapper.optim_context(wrapper):  # no_sync but last
                losses = wrapper(batch=batch, mode='loss', prepared=prep,
                                 counts=counts)
            total, log = self.parse_losses(losses)
            optim_wrapper.backward(total)  # non-finite: dropped by the guard
            totals.append(total.detach())
            logs.append(log)
        if not optim_wrapper.should_update():
            raise RuntimeError(
                f'train_step got {len(batches)} micro-batch(es), not what '
                'optim_wrapper.accumulative_counts asks for: gradient '
                "accumulation needs train_cfg.type='AccumulatingTrainLoop'")
        logs = logs[0] if len(logs) == 1 else self.objectives.merge_logs(logs)
        return self.guarded_update(optim_wrapper, torch.stack(totals), logs)

    def guarded_update(self, optim_wrapper, total: Tensor,
                       logs: Dict[str, Tensor]) -> dict:
        """Step unless a micro-batch total in ``total`` is non-finite on
        any rank; else drop the gradients. Logs ``guard/skipped`` and
        ``guard/streak``, which :class:`NonFiniteGuardHook` reads."""
        bad = all_reduce_sum((~torch.isfinite(total.detach())).float().sum())
        if bad.item() == 0:
            optim_wrapper.step()
            self._streak = 0
        else:
            self._skipped += 1
            self._streak += 1
            logs = {k: v for k, v in logs.items()
                    if torch.isfinite(torch.as_tensor(v)).all()}
        optim_wrapper.zero_grad()
        logs['guard/skipped'] = torch.tensor(float(self._skipped))
        logs['guard/streak'] = torch.tensor(float(self._streak))
        return logs

    def forward(self,
                batch: PackedBatch,
                mode: str = 'loss',
                data_samples=None,
                prepared: Optional[Prepared] = None,
                counts: Optional[Dict[str, Tensor]] = None
                ) -> Union[dict, List[dict], Prepared]:
        """``'loss'``: total and logs (``prepared`` and ``counts`` given
        under accumulation, else drawn and counted here); ``'prepare'``:
        the :class:`Prepared` of a training batch; ``'predict'``:
        :meth:`predict`."""
        if mode == 'loss':
            total, logs = self.compute_loss(
                batch, prepared=prepared, counts=counts,
                noise_seeds=None if prepared is not None else
                self.noise_seeds(batch))
            return dict(loss=total, logs=logs)
        if mode == 'prepare':
            return self.objectives.prepare(
                self.model, batch, noise_seeds=self.noise_seeds(batch))
        if mode == 'predict':
            return self.predict(batch)
        raise ValueError("mode must be 'loss', 'prepare' or 'predict', got "
                         f'{mode!r}')

    def compute_loss(self, batch: PackedBatch, generator=None,
                     noise_seeds: Optional[List[int]] = None,
                     prepared: Optional[Prepared] = None,
                     counts: Optional[Dict[str, Tensor]] = None):
        """One training forward: prepare (unless ``prepared`` is given) ->
        model -> objectives (normalised by ``counts`` when given)."""
        if prepared is None:
            prepared = self.objectives.prepare(self.model, batch, generator,
                                               noise_seeds)
        outputs = self.model(batch, prepared.noisy,
                             return_layers=self.objectives.requires_layers)
        return self.objectives(outputs, batch, prepared, counts=counts)

    @torch.no_grad()
    def predict(self, batch: Union[PackedBatch, List[dict]]) -> List[dict]:
        """Per-sample losses of every objective under fixed noise, or the
        benchmark outputs of a list of benchmark items."""
        if isinstance(batch, list):
            if self.tokenizer is None:
                raise ValueError('benchmarks need the config\'s top-level '
                                 '`tokenizer`')
            return predict_benchmark(self.model, batch, self.tokenizer,
                                     self.sampler, self.captioner,
                                     self.seed)
        first = batch.meta[0].get('index', 0) if batch.meta else 0
        gen = derived_generator(self.seed, int(first), device=batch.device)
        prepared = self.objectives.prepare(self.model, batch, gen)
        outputs = self.model(batch, prepared.noisy,
                             return_layers=self.objectives.requires_layers)
        results = [dict(meta=m) for m in batch.meta]
        for name, values in self.objectives.per_sample(
                outputs, batch, prepared).items():
            for b, value in enumerate(values.tolist()):
                results[b][f'loss/{name}'] = value
        return results

    def noise_seeds(self, batch: PackedBatch) -> List[int]:
        """One noise seed per noisy image: (seed, iteration, sample), the
        same on any rank, in any batch, after a resume."""
        hub = MessageHub.get_current_instance()
        iteration = int(hub.get_info('iter', 0) or 0)
        sample = batch.sample_ids[batch.noisy_index]  # (N_noisy,)
        first = torch.zeros(batch.noisy_images.numel(), dtype=torch.long,
                            device=sample.device)
        first.scatter_reduce_(0, batch.noisy_group, sample, 'amax',
                              include_self=False)
        index = [int(batch.meta[b].get('index', b)) if batch.meta else b
                 for b in first.tolist()]
        return [derive_seed(self.seed, iteration, i) for i in index]

    def parse_losses(self, losses: dict):
        """The total is the ObjectiveSet's; logs are logged as they are."""
        return losses['loss'], losses['logs']
