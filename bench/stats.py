"""Percentiles and summaries of latency samples."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(sorted_samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by the nearest-rank method; NaN without samples.

    Nearest rank, not interpolation: p99.9 of 5,000 samples is the 4,995th, a latency that was
    actually observed."""
    n = len(sorted_samples)
    if n == 0:
        return math.nan
    rank = max(1, math.ceil(q / 100 * n))
    return sorted_samples[min(rank, n) - 1]


def summarize_ms(samples: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/p99.9/max/mean in milliseconds of samples given in seconds."""
    s = sorted(samples)
    if not s:
        keys = ("p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "mean_ms")
        return dict.fromkeys(keys, math.nan)
    return {
        "p50_ms": percentile(s, 50) * 1e3,
        "p90_ms": percentile(s, 90) * 1e3,
        "p99_ms": percentile(s, 99) * 1e3,
        "p999_ms": percentile(s, 99.9) * 1e3,
        "max_ms": s[-1] * 1e3,
        "mean_ms": sum(s) / len(s) * 1e3,
    }
