"""Latency as fixed logarithmic buckets: a sketch that merges by adding counts.

Bucket `i >= 1` holds the durations in (MIN·γ^(i-1), MIN·γ^i] and is reported as its
geometric midpoint MIN·γ^(i-½), so any duration in it is reported within √γ - 1 ≈ 2.47% of
itself (DDSketch's guarantee, with the buckets fixed in advance). Fixed buckets are what lets
the hourly table store plain counts: a window's percentiles come from summing its hours'
counts per bucket, with no sketch to decode or re-merge. Bucket 0 holds everything up to
MIN (10 µs, below what a gRPC call can take) and the last bucket everything from about an
hour on (a long-lived stream), so a bucket number always fits a small integer column.

Pure: no grpc, no SQL.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

GAMMA = 1.05
MIN_SECONDS = 1e-5
CAP_SECONDS = 3600.0
_LOG_GAMMA = math.log(GAMMA)
MAX_BUCKET = math.ceil(math.log(CAP_SECONDS / MIN_SECONDS) / _LOG_GAMMA)  # 404
# The worst relative error of value_of(bucket_of(s)) for MIN_SECONDS < s < CAP_SECONDS.
RELATIVE_ERROR = math.sqrt(GAMMA) - 1


def bucket_of(seconds: float) -> int:
    """The bucket of a duration; NaN and negatives (a clock step) count as the shortest."""
    if not seconds > MIN_SECONDS:
        return 0
    if seconds >= CAP_SECONDS:
        return MAX_BUCKET
    return min(max(math.ceil(math.log(seconds / MIN_SECONDS) / _LOG_GAMMA), 1), MAX_BUCKET)


def value_of(bucket: int) -> float:
    """The seconds a bucket stands for: its geometric midpoint (MIN_SECONDS for bucket 0)."""
    if bucket <= 0:
        return MIN_SECONDS
    return MIN_SECONDS * math.pow(GAMMA, min(bucket, MAX_BUCKET) - 0.5)


def merge(parts: Iterable[Mapping[int, int]]) -> dict[int, int]:
    """One sketch from several (hours, replicas): the sum of their counts per bucket."""
    total: dict[int, int] = {}
    for part in parts:
        for bucket, count in part.items():
            total[bucket] = total.get(bucket, 0) + count
    return total


def percentile(counts: Mapping[int, int], q: float) -> float:
    """The `q` quantile (0 ≤ q ≤ 1) in seconds, by nearest rank: the value of the bucket
    holding the ⌈q·n⌉-th shortest call. 0.0 when there are no calls."""
    ordered = sorted((b, c) for b, c in counts.items() if c > 0)
    n = sum(c for _, c in ordered)
    if n == 0:
        return 0.0
    q = min(max(q, 0.0), 1.0)
    # The epsilon keeps 0.95 · 100 (= 95.00000000000001 in floats) at rank 95, not 96.
    rank = min(max(math.ceil(q * n - 1e-9), 1), n)
    seen = 0
    for bucket, count in ordered:
        seen += count
        if seen >= rank:
            return value_of(bucket)
    return value_of(ordered[-1][0])  # not reached: seen ends at n >= rank
