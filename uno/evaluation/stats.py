"""Uncertainty of benchmark numbers: bootstrap intervals, paired tests.

A benchmark score is a mean over prompts (or a mean of per-tag means, as
GenEval's ``overall``); its 95% interval comes from resampling the prompts
with replacement, within each tag when the score averages tags
(:func:`bootstrap_ci`). Two models evaluated on the same prompts and seeds
are compared pairwise (:func:`paired_difference`): the difference of their
scores, its interval from resampling seeds and prompts together, and a
sign-flip permutation p-value over prompts. Every resampling is seeded, so
a rerun prints the same interval.
"""
from typing import Dict, Hashable, Optional, Sequence, Tuple

import numpy as np

NUM_BOOT = 2000


def _strata(values: np.ndarray, strata: Optional[Sequence[Hashable]]
            ) -> Dict[Hashable, np.ndarray]:
    if strata is None:
        return {None: np.arange(values.shape[-1])}
    keys = list(strata)
    if len(keys) != values.shape[-1]:
        raise ValueError(f'{len(keys)} strata for {values.shape[-1]} values')
    out: Dict[Hashable, list] = {}
    for i, key in enumerate(keys):
        out.setdefault(key, []).append(i)
    return {k: np.asarray(v) for k, v in out.items()}


def stratified_mean(values: Sequence[float],
                    strata: Optional[Sequence[Hashable]] = None) -> float:
    """Mean of the per-stratum means (NaNs ignored); the plain mean
    without strata."""
    values = np.asarray(values, dtype=np.float64)
    groups = _strata(values, strata)
    return float(np.mean([np.nanmean(values[idx])
                          for idx in groups.values()]))


def bootstrap_ci(values: Sequence[float],
                 strata: Optional[Sequence[Hashable]] = None,
                 level: float = 0.95,
                 num_boot: int = NUM_BOOT,
                 seed: int = 0) -> Tuple[float, float]:
    """Percentile bootstrap interval of :func:`stratified_mean`.

    Args:
        values (Sequence[float]): One score per item (prompt, pair, image);
            NaN where an item has none (e.g. PSNR of an empty region).
        strata (Sequence, optional): The stratum (tag, edit kind) of each
            item; items are resampled within their stratum. Defaults to
            None.
        level (float): Coverage. Defaults to 0.95.
        num_boot (int): Resamples. Defaults to 2000.
        seed (int): Resampling seed. Defaults to 0.

    Returns:
        tuple[float, float]: ``(low, high)``; ``(nan, nan)`` for no items.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return float('nan'), float('nan')
    rng = np.random.default_rng(seed)
    means = []
    for idx in _strata(values, strata).values():
        pick = idx[rng.integers(0, idx.size, (num_boot, idx.size))]
        with np.errstate(invalid='ignore'):
            means.append(np.nanmean(values[pick], axis=1))  # (num_boot,)
    stat = np.mean(means, axis=0)
    tail = 100 * (1 - level) / 2
    low, high = np.nanpercentile(stat, [tail, 100 - tail])
    return float(low), float(high)


def paired_difference(a: np.ndarray,
                      b: np.ndarray,
                      strata: Optional[Sequence[Hashable]] = None,
                      level: float = 0.95,
                      num_boot: int = NUM_BOOT,
                      num_perm: int = 10000,
                      seed: int = 0) -> Dict[str, float]:
    """Score of ``a`` minus score of ``b`` on the same seeds and prompts.

    Args:
        a (np.ndarray): ``(S, P)`` per-item scores of model A, one row per
            training seed, one column per prompt.
        b (np.ndarray): ``(S, P)`` of model B, rows paired by seed and
            columns by prompt.
        strata (Sequence, optional): ``(P,)`` tag of each prompt; scores
            are means of per-tag means. Defaults to None.
        level (float): Interval coverage. Defaults to 0.95.
        num_boot (int): Resamples of seeds and prompts. Defaults to 2000.
        num_perm (int): Sign flips of the per-prompt differences.
            Defaults to 10000.
        seed (int): Defaults to 0.

    Returns:
        dict: ``diff`` (A - B), ``low``/``high`` (interval, resampling
        seeds and, within each tag, prompts), ``p_value`` (two-sided
        sign-flip permutation test over prompts of the seed-averaged
        differences), ``per_seed`` differences' ``seed_std``.
    """
    a, b = np.atleast_2d(a).astype(float), np.atleast_2d(b).astype(float)
    if a.shape != b.shape:
        raise ValueError(f'unpaired shapes {a.shape} and {b.shape}')
    d = a - b  # (S, P)
    groups = _strata(d, strata)
    rng = np.random.default_rng(seed)
    n_seeds = d.shape[0]

    def score(x):  # x: (..., P) -> (...,): mean of per-tag means
        with np.errstate(invalid='ignore'):
            return np.mean([np.nanmean(x[..., idx], axis=-1)
                            for idx in groups.values()], axis=0)

    diff = float(score(d.mean(0)))
    seeds = rng.integers(0, n_seeds, (num_boot, n_seeds))
    d_seed = d[seeds].mean(1)  # (num_boot, P): seeds resampled
    boot = []
    for idx in groups.values():
        pick = idx[rng.integers(0, idx.size, (num_boot, idx.size))]
        with np.errstate(invalid='ignore'):
            boot.append(np.nanmean(
                np.take_along_axis(d_seed, pick, axis=1), axis=1))
    boot = np.mean(boot, axis=0)
    tail = 100 * (1 - level) / 2
    low, high = np.nanpercentile(boot, [tail, 100 - tail])
    per_prompt = d.mean(0)  # (P,)
    signs = rng.choice([-1.0, 1.0], size=(num_perm, per_prompt.size))
    null = score(signs * per_prompt)
    p = (np.sum(np.abs(null) >= abs(diff) - 1e-12) + 1) / (num_perm + 1)
    return dict(diff=diff, low=float(low), high=float(high),
                p_value=float(p),
                seed_std=float(np.std(score(d), ddof=1))
                if n_seeds > 1 else float('nan'))


def add_intervals(out: Dict[str, float], key: str, values: Sequence[float],
                  strata: Optional[Sequence[Hashable]] = None,
                  seed: int = 0) -> None:
    """Set ``out[key + '/ci_low']`` and ``out[key + '/ci_high']`` to the
    95% bootstrap interval of ``values`` (see :func:`bootstrap_ci`)."""
    low, high = bootstrap_ci(values, strata, seed=seed)
    out[f'{key}/ci_low'], out[f'{key}/ci_high'] = low, high
