"""A tenant's plan is cached for the rate limiter: a change announced while the plan is being
read is not papered over by the read, and arbitrary tenant ids do not grow the cache for ever."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from nexus_server.ratelimit import policies as policies_module
from nexus_server.ratelimit import store
from nexus_server.ratelimit.policies import PLAN_DEFAULTS, TENANT_FEED, Policies


class _Database:
    @asynccontextmanager
    async def unit_of_work(self, readonly: bool = False) -> AsyncIterator[Any]:
        yield type("Uow", (), {"session": None})()


class _Feed:
    def __init__(self) -> None:
        self.listeners: list[Callable[[str, str], None]] = []

    def on_revoke(self, listener: Callable[[str, str], None]) -> None:
        self.listeners.append(listener)

    def announce(self, kind: str, subject: str) -> None:
        for listener in self.listeners:
            listener(kind, subject)


async def _no_overrides(session: Any) -> dict[tuple[str, str], int]:
    return {}


def _policies(plan_of: Any, feed: _Feed) -> Policies:
    return Policies(
        _Database(),  # type: ignore[arg-type]
        feed,  # type: ignore[arg-type]
        key_limit=lambda key_id: asyncio.sleep(0, 100),
        user_per_minute=600,
        plan_of=plan_of,
    )


async def test_a_plan_change_announced_during_the_read_is_not_forgotten(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(store, "all_overrides", _no_overrides)
    feed = _Feed()
    plans = ["free"]
    reads = []

    async def plan_of(uow: Any, tenant_id: str) -> str:
        reads.append(tenant_id)
        seen = plans[0]
        if len(reads) == 1:  # the upgrade commits and is announced while this read is out
            plans[0] = "business"
            feed.announce(TENANT_FEED, tenant_id)
        return seen

    policies = _policies(plan_of, feed)
    assert await policies.tenant_limit("ten_a") == PLAN_DEFAULTS["free"]
    assert await policies.tenant_limit("ten_a") == PLAN_DEFAULTS["business"]
    assert await policies.tenant_limit("ten_a") == PLAN_DEFAULTS["business"]
    assert reads == ["ten_a", "ten_a"]  # the second read is remembered


async def test_arbitrary_tenant_ids_do_not_grow_the_plan_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "all_overrides", _no_overrides)
    monkeypatch.setattr(policies_module, "MAX_PLANS", 50)

    async def plan_of(uow: Any, tenant_id: str) -> str:
        return ""

    policies = _policies(plan_of, _Feed())
    for n in range(500):
        await policies.tenant_limit(f"ten_{n}")
    assert len(policies._plans) <= 50
