"""Bootstrap intervals and paired differences of benchmark scores."""
import numpy as np
import pytest

from uno.evaluation.stats import (bootstrap_ci, paired_difference,
                                  stratified_mean)


def test_stratified_mean_is_the_mean_of_tag_means():
    values = [1, 1, 1, 0, 0, 1]
    tags = ['a', 'a', 'a', 'b', 'b', 'b']
    assert stratified_mean(values, tags) == pytest.approx((1 + 1 / 3) / 2)
    assert stratified_mean([1.0, np.nan, 0.0]) == 0.5


def test_bootstrap_interval_covers_the_truth_about_95_percent():
    rng = np.random.default_rng(1)
    hits = 0
    for k in range(200):
        flags = rng.random(96) < 0.3
        low, high = bootstrap_ci(flags, num_boot=1000, seed=k)
        hits += low <= 0.3 <= high
    assert 0.88 <= hits / 200 <= 0.99


def test_bootstrap_is_deterministic_and_narrows_with_items():
    rng = np.random.default_rng(0)
    small, large = rng.random(16) < 0.5, rng.random(576) < 0.5
    assert bootstrap_ci(small) == bootstrap_ci(small)
    width = [np.subtract(*bootstrap_ci(x)[::-1]) for x in (small, large)]
    assert width[1] < width[0] / 3
    assert np.isnan(bootstrap_ci([])[0])


def test_paired_difference_finds_a_real_gain_and_no_fake_one():
    rng = np.random.default_rng(0)
    tags = np.repeat(['t1', 't2', 't3'], 96)
    p = rng.uniform(0.2, 0.6, size=tags.size)  # per-prompt difficulty
    base = (rng.random((5, tags.size)) < p).astype(float)
    better = (rng.random((5, tags.size)) < p + 0.15).astype(float)
    gain = paired_difference(better, base, tags)
    assert gain['low'] > 0 and gain['p_value'] < 0.01
    assert gain['low'] < 0.15 < gain['high'] + 0.03
    same = (rng.random((5, tags.size)) < p).astype(float)
    null = paired_difference(same, base, tags)
    assert null['low'] < 0 < null['high'] and null['p_value'] > 0.05
    assert paired_difference(base, base, tags)['diff'] == 0
    with pytest.raises(ValueError, match='unpaired'):
        paired_difference(base, base[:, :10])
