"""The sign-in throttle's sequence: free attempts, escalating delays, a lock that runs out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from nexus_server.common.clock import FrozenClock
from nexus_server.common.errors import ResourceExhausted
from nexus_server.db.engine import create_async
from nexus_server.db.migrate import upgrade
from nexus_server.db.uow import Database
from nexus_server.identity.throttle import Policy, Throttle

POLICY = Policy()


@pytest.fixture
async def throttle(tmp_path: Path) -> AsyncIterator[tuple[Throttle, FrozenClock]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'throttle.db'}"
    await asyncio.to_thread(upgrade, url)
    clock = FrozenClock()
    db = Database(create_async(url), clock)
    yield Throttle(db, POLICY), clock
    await db.dispose()


def test_delays_start_after_the_free_attempts_and_double_up_to_the_cap() -> None:
    delays = [POLICY.delay_after(n).total_seconds() for n in range(1, POLICY.free_attempts + 4)]
    assert delays == [0] * (POLICY.free_attempts - 1) + [1, 2, 4, 8]
    assert POLICY.delay_after(1000) == POLICY.max_delay


async def test_failures_lock_the_email_until_the_lock_runs_out(
    throttle: tuple[Throttle, FrozenClock],
) -> None:
    limiter, clock = throttle
    for _ in range(POLICY.lock_after):
        await limiter.admit("victim@example.com")
        clock.advance(POLICY.max_delay)
    with pytest.raises(ResourceExhausted) as caught:
        await limiter.admit("victim@example.com")
    assert caught.value.reason == "ACCOUNT_LOCKED"
    assert caught.value.retry_after > timedelta(0)
    clock.advance(POLICY.lock_for)
    await limiter.admit("victim@example.com")


async def test_an_attempt_inside_the_delay_is_throttled(throttle: tuple[Throttle, FrozenClock]) -> None:
    limiter, _ = throttle
    for _ in range(POLICY.free_attempts):
        await limiter.admit("fast@example.com")
    with pytest.raises(ResourceExhausted) as caught:
        await limiter.admit("fast@example.com")
    assert caught.value.reason == "LOGIN_THROTTLED"


async def test_forgiving_gives_the_attempt_back(throttle: tuple[Throttle, FrozenClock]) -> None:
    limiter, _ = throttle
    for _ in range(POLICY.free_attempts - 1):
        await limiter.forgive(await limiter.admit("forgiven@example.com"))
    for _ in range(POLICY.free_attempts):
        await limiter.admit("forgiven@example.com")
