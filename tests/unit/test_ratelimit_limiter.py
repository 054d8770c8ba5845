"""What the limiter does when its shared store is down: local (default), open, closed."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from nexus_server.ratelimit.limiter import Limiter
from nexus_server.ratelimit.limits import BackendUnavailable, Decision, Limit


class DownBackend:
    def __init__(self) -> None:
        self.calls = 0

    async def charge(self, limits: Sequence[Limit], cost: int) -> Decision:
        self.calls += 1
        raise BackendUnavailable("connection refused")


LIMIT = [Limit("apikey", "apikey:k", 3)]


async def test_local_fallback_keeps_limiting_per_replica() -> None:
    limiter = Limiter(DownBackend(), on_down="local")
    results = [(await limiter.charge(LIMIT)).allowed for _ in range(5)]
    assert results == [True, True, True, False, False]


async def test_open_admits_every_call_without_limit_fields() -> None:
    limiter = Limiter(DownBackend(), on_down="open")
    decisions = [await limiter.charge(LIMIT) for _ in range(10)]
    assert all(d.allowed and not d.states for d in decisions)


async def test_closed_refuses() -> None:
    limiter = Limiter(DownBackend(), on_down="closed")
    with pytest.raises(BackendUnavailable):
        await limiter.charge(LIMIT)


async def test_a_down_store_is_not_asked_again_until_the_retry_interval() -> None:
    backend = DownBackend()
    limiter = Limiter(backend, on_down="open", retry_seconds=60)
    for _ in range(10):
        await limiter.charge(LIMIT)
    assert backend.calls == 1


def test_the_failure_mode_must_be_known() -> None:
    with pytest.raises(ValueError):
        Limiter(DownBackend(), on_down="sometimes")
