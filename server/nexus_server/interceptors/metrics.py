"""Prometheus metrics per method: calls started and handled (by code), and latency.

The counts are plain integers kept per method and turned into Prometheus families only when
scraped: prometheus_client's Counter and Histogram take a lock and walk the buckets on every
increment, which on the per-call path cost more than the rest of this layer together. The
families, names and labels are the ones those classes would expose.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Iterator

import grpc
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from nexus_server.interceptors.call import Call

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_LABELS = ["grpc_service", "grpc_method"]
FOLD_EVERY = 256


class _MethodStats:
    __slots__ = ("buckets", "created", "handled", "handled_created", "name", "service", "started", "total")

    def __init__(self, service: str, name: str):
        self.service = service
        self.name = name
        self.created = time.time()
        self.started = 0
        self.handled: dict[str, int] = {}  # status code name -> calls
        self.handled_created: dict[str, float] = {}
        self.buckets = [0] * (len(_BUCKETS) + 1)  # per bucket, not cumulative; last is +Inf
        self.total = 0.0  # seconds


class Metrics:
    def __init__(self, registry: CollectorRegistry):
        self._methods: dict[str, _MethodStats] = {}
        self._done: deque[tuple[_MethodStats, float, grpc.StatusCode]] = deque()  # outcomes not yet counted
        self._folding = threading.Lock()
        registry.register(self)

    def before(self, call: Call) -> None:
        m = call.method
        stats = self._methods.get(m.full_name)
        if stats is None:
            stats = self._methods[m.full_name] = _MethodStats(m.service, m.name)
        stats.started += 1

    def after(self, call: Call) -> None:
        stats = self._methods.get(call.method.full_name)
        if stats is None:  # refused before this layer ran
            return
        # Counted in batches (as the access log is formatted): folded into the histogram
        # every FOLD_EVERY calls and before every scrape, where the code runs warm.
        done = self._done
        done.append((stats, call.elapsed(), call.code))
        if len(done) >= FOLD_EVERY:
            self._fold()

    def _fold(self) -> None:
        # The scrape thread folds too: one folder at a time; deque pops are atomic, so an
        # outcome appended meanwhile is folded by this pass or the next, exactly once.
        with self._folding:
            done = self._done
            for _ in range(len(done)):
                stats, elapsed, status = done.popleft()
                code = status.name
                stats.buckets[bisect_left(_BUCKETS, elapsed)] += 1  # le: the first bound >= elapsed
                stats.total += elapsed
                count = stats.handled.get(code)
                if count is None:
                    stats.handled_created[code] = time.time()
                    count = 0
                stats.handled[code] = count + 1

    def describe(self) -> list[Metric]:
        return []  # families are made at scrape time; nothing to check up front

    def collect(self) -> Iterator[Metric]:
        # Scrapes run on the exposition server's thread: copy before reading (each copy is
        # one C-level operation under the GIL, so it never sees a dict mid-resize).
        self._fold()
        methods = list(self._methods.values())
        started = CounterMetricFamily("nexus_grpc_server_started", "RPCs started.", labels=_LABELS)
        handled = CounterMetricFamily(
            "nexus_grpc_server_handled", "RPCs completed, by status code.", labels=[*_LABELS, "grpc_code"]
        )
        latency = HistogramMetricFamily(
            "nexus_grpc_server_handling_seconds",
            "Time from the first layer to the status, streams included.",
            labels=_LABELS,
        )
        for stats in methods:
            labels = [stats.service, stats.name]
            started.add_metric(labels, stats.started, created=stats.created)
            created = dict(stats.handled_created)
            for code, count in dict(stats.handled).items():
                handled.add_metric([*labels, code], count, created=created.get(code))
            counts, cumulative, buckets = list(stats.buckets), 0, []
            for bound, count in zip((*(str(b) for b in _BUCKETS), "+Inf"), counts, strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            latency.add_metric(labels, buckets, stats.total)
        yield started
        yield handled
        yield latency
