"""bench.timing's statistics: the median difference, its bootstrap interval and the paired
permutation test, on made-up samples (no server, no clock)."""

from __future__ import annotations

import math
import random

import pytest

from bench.timing import (
    ALPHA,
    bootstrap_interval,
    compare,
    median,
    median_difference,
    paired_permutation_p,
    unknown_tokens,
)
from vault.domain.tokens import well_formed


def _noise(seed: int, n: int, shift: float = 0.0) -> list[float]:
    rng = random.Random(seed)
    return [1000.0 + rng.gauss(0, 50) + shift for _ in range(n)]


def test_median_and_difference() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 2.0, 3.0]) == 2.5
    assert math.isnan(median([]))
    assert median_difference([10.0, 20.0, 30.0], [1.0, 2.0, 3.0]) == 18.0


def test_a_clear_shift_is_distinguishable() -> None:
    a, b = _noise(1, 400, shift=40.0), _noise(2, 400)
    p = paired_permutation_p(a, b, 500, random.Random(3))
    assert p < ALPHA
    low, high = bootstrap_interval(a, b, 500, random.Random(4))
    assert 0 < low < 40 < high


def test_the_same_distribution_is_not_distinguishable() -> None:
    # Not "never": a test at ALPHA calls noise a difference in that share of seeds. These
    # fixed seeds are an ordinary draw, so the outcome is deterministic.
    a, b = _noise(5, 400), _noise(6, 400)
    p = paired_permutation_p(a, b, 500, random.Random(7))
    assert p > ALPHA
    low, high = bootstrap_interval(a, b, 500, random.Random(8))
    assert low < 0 < high


def test_the_p_value_counts_the_observed_arrangement() -> None:
    # Identical pairs: every swap gives the observed difference (0), so p is exactly 1.
    same = [1.0, 2.0, 3.0, 4.0]
    assert paired_permutation_p(same, same, 99, random.Random(0)) == 1.0
    # Never 0, however large the difference: the smallest p is 1 / (resamples + 1).
    p = paired_permutation_p(_noise(1, 50, shift=500.0), _noise(2, 50), 99, random.Random(0))
    assert p == 1 / 100


def test_seeded_results_repeat() -> None:
    a, b = _noise(9, 200, shift=10.0), _noise(10, 200)
    assert compare(a, b, 200, seed=11) == compare(a, b, 200, seed=11)


def test_compare_reports_difference_and_share() -> None:
    a, b = _noise(12, 300, shift=100.0), _noise(13, 300)
    out = compare(a, b, 200, seed=1)
    assert out["difference_us"] == median(a) - median(b)
    assert out["difference_pct"] == pytest.approx(out["difference_us"] / median(b) * 100)
    assert out["ci95_low_us"] < out["difference_us"] < out["ci95_high_us"]
    assert out["distinguishable"] is True


def test_paired_samples_must_match() -> None:
    with pytest.raises(ValueError, match="same length"):
        paired_permutation_p([1.0], [1.0, 2.0], 10, random.Random(0))
    with pytest.raises(ValueError, match="same length"):
        bootstrap_interval([1.0], [], 10, random.Random(0))


def test_unknown_tokens_have_the_shape_of_issued_ones() -> None:
    tokens = unknown_tokens(random.Random(0), 50)
    assert len(set(tokens)) == 50
    assert all(well_formed(t) and t.startswith("tok_") for t in tokens)
