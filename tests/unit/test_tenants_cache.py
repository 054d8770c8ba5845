"""The access cache: served from memory once warm, forgotten exactly where the feed says,
never storing an answer that raced with a change, and bounded in size."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from nexus_server.auth.principal import Membership
from nexus_server.tenants import access
from nexus_server.tenants.cache import MEMBERSHIP, TENANT, USER, AccessCache, Entry, Lru, MemberFacts


class Feed:
    """Stands in for Revocations: hands each row to the listeners."""

    def __init__(self) -> None:
        self.listeners: list[Callable[[str, str], None]] = []

    def on_revoke(self, listener: Callable[[str, str], None]) -> None:
        self.listeners.append(listener)

    def send(self, kind: str, subject: str) -> None:
        for listener in self.listeners:
            listener(kind, subject)


def facts(tenant_id: str, user_id: str, roles: tuple[str, ...]) -> MemberFacts:
    held = access.Standing(roles, (), (), {r: frozenset({f"{r}.perm"}) for r in roles})
    return MemberFacts(held, {}, Membership(tenant_id, user_id, frozenset(roles)))


class Counting(AccessCache):
    """An AccessCache over dicts instead of a database, counting its reads."""

    def __init__(self, feed: Feed, **options: Any):
        super().__init__(None, feed, None, **options)  # type: ignore[arg-type]
        self.statuses: dict[str, str] = {}
        self.roles: dict[tuple[str, str], tuple[str, ...]] = {}
        self.accounts: dict[str, str] = {}
        self.reads = 0
        self.gate: asyncio.Event | None = None  # when set, member reads wait for it
        self.reading = asyncio.Event()  # set once a member read has begun

    async def _read_tenant(self, tenant_id: str) -> str | None:
        self.reads += 1
        return self.statuses.get(tenant_id)

    async def _read_users(self, user_ids: list[str]) -> dict[str, str]:
        self.reads += 1
        return {u: self.accounts[u] for u in user_ids if u in self.accounts}

    async def _read_member(self, tenant_id: str, user_id: str) -> MemberFacts | None:
        self.reads += 1
        roles = self.roles.get((tenant_id, user_id))
        self.reading.set()
        if self.gate is not None:
            await self.gate.wait()
        return facts(tenant_id, user_id, roles) if roles is not None else None


async def test_a_warm_cache_answers_without_reading() -> None:
    cache = Counting(Feed())
    cache.statuses["t1"] = "active"
    cache.roles[("t1", "u1")] = ("member",)
    cache.accounts["u1"] = "active"
    for _ in range(3):
        assert await cache.tenant_status("t1") == "active"
        assert await cache.user_status("u1") == "active"
        assert (await cache.member("t1", "u1")) is not None
    assert cache.reads == 3


async def test_a_member_row_forgets_that_member_only() -> None:
    feed = Feed()
    cache = Counting(feed)
    cache.roles[("t1", "u1")] = ("member",)
    cache.roles[("t1", "u2")] = ("member",)
    await cache.member("t1", "u1")
    await cache.member("t1", "u2")
    cache.roles[("t1", "u1")] = ("read_only",)
    cache.roles[("t1", "u2")] = ("read_only",)
    feed.send(MEMBERSHIP, "t1/u1")
    assert (await cache.member("t1", "u1")).standing.direct == ("read_only",)  # type: ignore[union-attr]
    assert (await cache.member("t1", "u2")).standing.direct == ("member",)  # type: ignore[union-attr]


async def test_a_tenant_wide_row_forgets_every_member_and_the_status() -> None:
    feed = Feed()
    cache = Counting(feed)
    cache.statuses["t1"] = "active"
    cache.roles[("t1", "u1")] = ("member",)
    cache.roles[("t2", "u1")] = ("member",)
    await cache.tenant_status("t1")
    await cache.member("t1", "u1")
    await cache.member("t2", "u1")
    cache.statuses["t1"] = "suspended"
    del cache.roles[("t1", "u1")]
    cache.roles[("t2", "u1")] = ("admin",)
    feed.send(TENANT, "t1")
    assert await cache.tenant_status("t1") == "suspended"
    assert await cache.member("t1", "u1") is None
    assert (await cache.member("t2", "u1")).standing.direct == ("member",)  # type: ignore[union-attr]
    feed.send(MEMBERSHIP, "t2/*")
    assert (await cache.member("t2", "u1")).standing.direct == ("admin",)  # type: ignore[union-attr]


async def test_a_load_that_races_with_a_change_is_not_kept() -> None:
    feed = Feed()
    cache = Counting(feed)
    cache.roles[("t1", "u1")] = ("member",)
    cache.gate = asyncio.Event()
    loading = asyncio.create_task(cache.member("t1", "u1"))
    await cache.reading.wait()  # the load has read the old roles, and waits
    cache.roles[("t1", "u1")] = ("read_only",)
    feed.send(MEMBERSHIP, "t1/u1")  # the change commits while the load is out
    cache.gate.set()
    assert (await loading).standing.direct == ("member",)  # type: ignore[union-attr]
    assert (await cache.member("t1", "u1")).standing.direct == ("read_only",)  # type: ignore[union-attr]


async def test_account_statuses_are_re_read_in_one_batch_and_never_served_stale() -> None:
    feed = Feed()
    cache = Counting(feed, user_max_age=0.2)
    cache.accounts.update({"u1": "active", "u2": "active"})
    assert await cache.user_status("u1") == "active"
    assert await cache.user_status("u2") == "active"
    cache.accounts["u1"] = "disabled"
    reads = cache.reads
    await cache.refresh_users()
    assert cache.reads == reads + 1  # both accounts in one read
    assert await cache.user_status("u1") == "disabled"
    cache.accounts["u2"] = "disabled"
    await asyncio.sleep(0.25)  # no refresh ran: the entry is too old to serve
    assert await cache.user_status("u2") == "disabled"
    cache.accounts["u2"] = "active"
    feed.send(USER, "u2")
    assert await cache.user_status("u2") == "active"


async def test_a_caller_after_a_change_does_not_join_a_read_begun_before_it() -> None:
    feed = Feed()
    cache = Counting(feed)
    cache.roles[("t1", "u1")] = ("member",)
    cache.gate = asyncio.Event()
    before = asyncio.create_task(cache.member("t1", "u1"))
    await cache.reading.wait()
    cache.roles[("t1", "u1")] = ("read_only",)
    feed.send(MEMBERSHIP, "t1/*")
    after = asyncio.create_task(cache.member("t1", "u1"))
    cache.gate.set()
    assert (await before).standing.direct == ("member",)  # type: ignore[union-attr]
    assert (await after).standing.direct == ("read_only",)  # type: ignore[union-attr]


async def test_concurrent_misses_share_one_read() -> None:
    cache = Counting(Feed())
    cache.roles[("t1", "u1")] = ("member",)
    cache.gate = asyncio.Event()
    waiting = [asyncio.create_task(cache.member("t1", "u1")) for _ in range(5)]
    await cache.reading.wait()
    cache.gate.set()
    assert len({id(await w) for w in waiting}) == 1
    assert cache.reads == 1


async def test_an_entry_past_max_age_is_served_while_one_read_replaces_it() -> None:
    cache = Counting(Feed(), max_age=0.05)
    cache.roles[("t1", "u1")] = ("member",)
    await cache.member("t1", "u1")
    cache.roles[("t1", "u1")] = ("admin",)
    await asyncio.sleep(0.06)
    assert (await cache.member("t1", "u1")).standing.direct == ("member",)  # type: ignore[union-attr]
    assert (await cache.member("t1", "u1")).standing.direct == ("member",)  # type: ignore[union-attr]
    await asyncio.gather(*cache._flights.values())  # the one read in the background
    assert (await cache.member("t1", "u1")).standing.direct == ("admin",)  # type: ignore[union-attr]
    assert cache.reads == 2


async def test_members_are_bounded_and_the_evicted_are_forgotten_by_their_tenant() -> None:
    feed = Feed()
    cache = Counting(feed, max_members=2)
    for user in ("u1", "u2", "u3"):
        cache.roles[("t1", user)] = ("member",)
        await cache.member("t1", user)
    assert len(cache._members) == 2
    assert cache._by_tenant == {"t1": {"u2", "u3"}}
    feed.send(TENANT, "t1")
    assert len(cache._members) == 0 and cache._by_tenant == {}


def test_lru_drops_the_least_recently_used() -> None:
    evicted: list[str] = []
    lru: Lru[str, int] = Lru(2, evicted.append)
    lru.put("a", Entry(1, 0.0))
    lru.put("b", Entry(2, 0.0))
    assert lru.get("a") is not None  # a is now the most recent
    lru.put("c", Entry(3, 0.0))
    assert (evicted, "a" in lru, "b" in lru, "c" in lru) == (["b"], True, False, True)
