"""A weighted mixture of datasets, deterministic by index.

Index ``i`` picks a source with probability proportional to its weight
(from an RNG seeded by ``(seed, i)``) and then an index within it, so the
mixture is reproducible, resumable and independent of worker count. The
sources are a dict keyed by name, so a config delta can change one weight.
"""
from typing import Dict

import numpy as np
from torch.utils.data import Dataset

from uno.registry import DATASETS


@DATASETS.register_module()
class MixtureDataset(Dataset):
    """Weighted mixture of named datasets.

    Args:
        datasets (dict[str, dict]): ``name -> DATASETS config``.
        weights (dict[str, float]): ``name -> weight``; a missing name has
            weight 1, weight 0 drops the source.
        num_samples (int): Mixture length. Defaults to 100000.
        seed (int): Mixing seed. Defaults to 0.
    """

    def __init__(self,
                 datasets: Dict[str, dict],
                 weights: Dict[str, float] = None,
                 num_samples: int = 100000,
                 seed: int = 0):
        weights = dict(weights or {})
        unknown = set(weights) - set(datasets)
        if unknown:
            raise ValueError(f'weights for unknown datasets {sorted(unknown)}'
                             f'; the mixture has {sorted(datasets)}')
        self.names = [n for n in datasets if weights.get(n, 1.0) > 0]
        if not self.names:
            raise ValueError('every dataset of the mixture has weight 0')
        self.datasets = {
            n: DATASETS.build(cfg) if isinstance(cfg, dict) else cfg
            for n, cfg in datasets.items() if n in self.names
        }
        w = np.array([float(weights.get(n, 1.0)) for n in self.names])
        self.probs = w / w.sum()
        self.num_samples, self.seed = num_samples, seed

    def __len__(self) -> int:
        return self.num_samples

    @property
    def metainfo(self) -> dict:
        """What mmengine's loops give evaluators as ``dataset_meta``."""
        return dict(dataset='MixtureDataset', seed=self.seed,
                    num_samples=self.num_samples,
                    sources={n: float(p)
                             for n, p in zip(self.names, self.probs)})

    def source_of(self, index: int):
        """``(name, index within it)`` of mixture item ``index``."""
        rng = np.random.default_rng([self.seed, 17, index])
        name = self.names[int(rng.choice(len(self.names), p=self.probs))]
        return name, int(rng.integers(len(self.datasets[name])))

    def __getitem__(self, index: int):
        name, inner = self.source_of(index)
        sample = self.datasets[name][inner]
        if sample is not None:
            # the mixture index identifies the sample (noise seeds, eval);
            # the source's own index is kept beside it
            sample.meta.update(source=name, source_index=inner,
                               index=index)
        return sample
