"""The in-process backend: one replica's counters in a dict (the default).

The event loop runs one coroutine at a time and `charge` never awaits, so checking and
charging every limit of a call is atomic without a lock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from nexus_server.ratelimit.limits import Decision, Limit, evaluate


def monotonic_us() -> int:
    return time.monotonic_ns() // 1000


class MemoryBackend:
    def __init__(self, now_us: Callable[[], int] = monotonic_us, *, sweep_every: int = 10_000):
        self.now_us = now_us
        self._tats: dict[str, int] = {}
        self._sweep_every = sweep_every
        self._calls = 0

    async def charge(self, limits: Sequence[Limit], cost: int) -> Decision:
        return self.charge_now(limits, cost)

    def charge_now(self, limits: Sequence[Limit], cost: int) -> Decision:
        now = self.now_us()
        tats = self._tats
        decision, new_tats = evaluate(limits, [tats.get(lim.key, 0) for lim in limits], now, cost)
        if decision.allowed and cost > 0:
            for lim, tat in zip(limits, new_tats, strict=True):
                tats[lim.key] = tat
        self._calls += 1
        if self._calls % self._sweep_every == 0:
            self._sweep(now)
        return decision

    def _sweep(self, now: int) -> None:
        # A TAT in the past is the same as none: forget it, so idle subjects cost nothing.
        for key in [k for k, tat in self._tats.items() if tat <= now]:
            del self._tats[key]
