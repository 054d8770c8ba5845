"""The latency buckets: every duration is reported within the stated relative error, the
percentiles of known distributions come out right, and sketches merge by adding counts."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from nexus_server.usage.latency import (
    CAP_SECONDS,
    MAX_BUCKET,
    MIN_SECONDS,
    RELATIVE_ERROR,
    bucket_of,
    merge,
    percentile,
    value_of,
)


def sketch(samples: list[float]) -> dict[int, int]:
    return dict(Counter(bucket_of(s) for s in samples))


def exact(samples: list[float], q: float) -> float:
    """Nearest-rank percentile of the raw samples."""
    ordered = sorted(samples)
    return ordered[max(math.ceil(q * len(ordered) - 1e-9), 1) - 1]


def test_every_duration_is_reported_within_the_relative_error() -> None:
    assert RELATIVE_ERROR <= 0.025
    rand = random.Random(7)
    # Log-uniform over the whole range between the floor and the cap, plus the bucket edges.
    samples = [math.exp(rand.uniform(math.log(MIN_SECONDS), math.log(CAP_SECONDS))) for _ in range(20_000)]
    samples += [MIN_SECONDS * 1.05**i for i in range(1, MAX_BUCKET - 1)]
    for seconds in samples:
        if not MIN_SECONDS < seconds < CAP_SECONDS:
            continue
        reported = value_of(bucket_of(seconds))
        assert abs(reported - seconds) / seconds <= RELATIVE_ERROR + 1e-12, seconds


def test_buckets_are_ordered_and_bounded() -> None:
    durations = [0.0, 5e-6, 1e-5, 2e-5, 1e-4, 0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 3599.0]
    buckets = [bucket_of(s) for s in durations]
    assert buckets == sorted(buckets)
    assert buckets[:3] == [0, 0, 0]  # up to 10 µs
    assert bucket_of(1e-4) < bucket_of(1.1e-4)  # neighbours 10% apart are told apart
    assert bucket_of(CAP_SECONDS) == bucket_of(86_400.0) == MAX_BUCKET  # long streams: capped
    assert bucket_of(-1.0) == bucket_of(float("nan")) == 0
    assert MAX_BUCKET < 2**15  # fits any integer column


def test_percentiles_of_a_uniform_distribution() -> None:
    # 1 ms, 2 ms, …, 1000 ms: p50 is 500 ms, p95 950 ms, p99 990 ms.
    samples = [i / 1000 for i in range(1, 1001)]
    counts = sketch(samples)
    for q, expected in [(0.5, 0.5), (0.95, 0.95), (0.99, 0.99), (1.0, 1.0)]:
        assert percentile(counts, q) == pytest.approx(expected, rel=RELATIVE_ERROR)


def test_percentiles_of_a_long_tailed_distribution() -> None:
    rand = random.Random(11)
    samples = [rand.lognormvariate(math.log(0.02), 1.2) for _ in range(50_000)]
    counts = sketch(samples)
    for q in (0.5, 0.9, 0.95, 0.99, 0.999):
        assert percentile(counts, q) == pytest.approx(exact(samples, q), rel=RELATIVE_ERROR)


def test_percentiles_of_a_two_valued_distribution() -> None:
    # 94 fast calls and 6 slow ones: p50 is fast, p95 and p99 are slow.
    counts = sketch([0.001] * 94 + [2.0] * 6)
    assert percentile(counts, 0.5) == pytest.approx(0.001, rel=RELATIVE_ERROR)
    assert percentile(counts, 0.94) == pytest.approx(0.001, rel=RELATIVE_ERROR)
    assert percentile(counts, 0.95) == pytest.approx(2.0, rel=RELATIVE_ERROR)
    assert percentile(counts, 0.99) == pytest.approx(2.0, rel=RELATIVE_ERROR)


def test_no_calls_have_no_latency() -> None:
    assert percentile({}, 0.5) == 0.0
    assert percentile({17: 0}, 0.99) == 0.0


def test_merging_adds_counts_and_gives_the_percentiles_of_all_samples() -> None:
    rand = random.Random(3)
    hours = [[rand.expovariate(1 / (0.01 * (h + 1))) for _ in range(2000)] for h in range(5)]
    merged = merge(sketch(hour) for hour in hours)
    everything = [s for hour in hours for s in hour]
    assert merged == sketch(everything)
    assert sum(merged.values()) == len(everything)
    for q in (0.5, 0.95, 0.99):
        assert percentile(merged, q) == percentile(sketch(everything), q)
        assert percentile(merged, q) == pytest.approx(exact(everything, q), rel=RELATIVE_ERROR)
