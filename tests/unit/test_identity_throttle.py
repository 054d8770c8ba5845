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


async def test_a_lock_holds_one_address_and_never_another(throttle: tuple[Throttle, FrozenClock]) -> None:
    limiter, clock = throttle
    for _ in range(POLICY.lock_after):
        await limiter.admit("owner@example.com", "203.0.113.9")
        clock.advance(POLICY.max_delay)
    with pytest.raises(ResourceExhausted) as caught:
        await limiter.admit("owner@example.com", "203.0.113.9")
    assert caught.value.reason == "ACCOUNT_LOCKED"
    await limiter.admit("owner@example.com", "198.51.100.7")  # the owner, elsewhere


async def test_failures_spread_over_addresses_pace_new_devices_but_never_known_ones(
    throttle: tuple[Throttle, FrozenClock],
) -> None:
    limiter, clock = throttle
    for n in range(POLICY.spread_after + 1):
        await limiter.admit("spread@example.com", f"2001:db8::{n:x}")
    with pytest.raises(ResourceExhausted) as caught:
        await limiter.admit("spread@example.com", "2001:db8::ffff")
    assert caught.value.reason == "LOGIN_THROTTLED"
    assert caught.value.retry_after <= POLICY.spread_max_delay
    for _ in range(3):  # a known device is counted but never held back, and nothing locks
        await limiter.admit("spread@example.com", "192.0.2.1", known_device=True)
    clock.advance(POLICY.spread_max_delay)
    await limiter.admit("spread@example.com", "2001:db8::ffff")  # paced, not locked


async def test_clearing_forgets_the_email_at_every_address(throttle: tuple[Throttle, FrozenClock]) -> None:
    limiter, clock = throttle
    for address in ("192.0.2.1", "192.0.2.2"):
        for _ in range(POLICY.lock_after):
            await limiter.admit("reset@example.com", address)
            clock.advance(POLICY.max_delay)
    await limiter.clear("reset@example.com")
    for address in ("192.0.2.1", "192.0.2.2"):
        await limiter.admit("reset@example.com", address)
