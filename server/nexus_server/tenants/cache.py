"""The facts CheckPermission and the authentication layer ask about, held in memory.

A tenant's status, a member's standing (direct roles, groups, what each role grants) and
project grants, and an account's status are read once and then served without touching the
database. They are forgotten when the revocation feed says they changed: tenant workflows
write a `tenant` row (status, domain) or a `membership` row (`<tenant>/<user>`, or
`<tenant>/*` when a role or group changes) in the transaction that makes the change, and
every replica applies it within one poll interval, so answers are right everywhere within
a second.

Accounts are identity's: it sends no feed row when one is disabled or enabled. Their status
is re-read in one batched query per `user_refresh` seconds for the accounts asked about
lately, and an entry older than `user_max_age` is never served (it is re-read on demand
instead), so a disabled account is refused within a second too. A `user` feed row (the kind
identity uses for "every token of this user") also drops the entry at once.

Guards that keep it honest and the request path off the database:
- a read that raced with an invalidation of what it read does not store its (perhaps old)
  answer: every invalidation bumps an epoch, and while reads are in flight the epoch of
  each touched scope is remembered, so a read stores only if nothing it read was touched
  after it began;
- `max_age` bounds how long a tenant or member entry goes unchecked, should a feed row ever
  be missed (a replica whose feed poll failed for longer than the feed's window); an entry
  past it is still served while one read in the background replaces it, so entries cached
  together do not all send their callers to the database together;
- concurrent misses of one key share one read (a task of its own, which a caller that gives
  up does not cancel);
- every map is an LRU with a fixed capacity, so memory is bounded whatever callers ask.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from nexus_server.auth.principal import Membership
from nexus_server.auth.revocations import Revocations
from nexus_server.common import periodic
from nexus_server.db.uow import Database
from nexus_server.tenants import access, store
from nexus_server.tenants.people import People

log = logging.getLogger("nexus.tenants")

# Feed kinds (written by tenant workflows; `user` by identity).
MEMBERSHIP = "membership"  # subject: "<tenant_id>/<user_id>", or "<tenant_id>/*" for all
TENANT = "tenant"  # subject: tenant id; status, domain or roles changed
USER = "user"  # subject: user id

_MAX_TOUCHED = 10_000

K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True)
class Entry(Generic[V]):
    value: V
    as_of: float  # time.monotonic() when the read that produced it began


class Lru(Generic[K, V]):
    """A map of at most `capacity` entries; the least recently used go first."""

    def __init__(self, capacity: int, on_evict: Callable[[K], None] | None = None):
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._items: OrderedDict[K, Entry[V]] = OrderedDict()
        self._on_evict = on_evict

    def get(self, key: K) -> Entry[V] | None:
        entry = self._items.get(key)
        if entry is not None:
            self._items.move_to_end(key)
        return entry

    def put(self, key: K, entry: Entry[V]) -> None:
        self._items[key] = entry
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            old, _ = self._items.popitem(last=False)
            if self._on_evict is not None:
                self._on_evict(old)

    def pop(self, key: K) -> None:
        self._items.pop(key, None)

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items


@dataclass(frozen=True)
class MemberFacts:
    """One member's standing and project grants in one tenant."""

    standing: access.Standing
    grants: dict[str, str]  # project → role
    membership: Membership  # what the authentication layer asks for


Scope = str | tuple[str, str]  # a tenant id, a (tenant_id, user_id) pair, or "user:<id>"


class AccessCache:
    def __init__(
        self,
        db: Database,
        revocations: Revocations,
        people: People,
        *,
        max_tenants: int = 100_000,
        max_members: int = 50_000,
        max_users: int = 50_000,
        max_age: float = 60.0,
        user_refresh: float = 0.4,
        user_max_age: float = 0.9,
    ):
        self.db = db
        self.people = people  # account status, from identity
        self.max_age = max_age
        self.user_refresh = user_refresh
        self.user_max_age = user_max_age
        self._tenants: Lru[str, str | None] = Lru(max_tenants)
        self._members: Lru[tuple[str, str], MemberFacts | None] = Lru(max_members, self._forget_member)
        self._users: Lru[str, str | None] = Lru(max_users)
        self._by_tenant: dict[str, set[str]] = {}  # tenant → user ids with a member entry
        self._asked: set[str] = set()  # accounts asked about since the last refresh
        self._epoch = 0
        self._loads = 0  # reads in flight
        self._flights: dict[tuple[str, Any], asyncio.Task[Any]] = {}  # the read of each key in flight
        self._touched: dict[Scope, int] = {}  # scope → epoch of its last invalidation (during loads)
        self._barrier = 0  # reads begun before this epoch store nothing (when _touched overflowed)
        revocations.on_revoke(self.invalidate)

    # --- invalidation ------------------------------------------------------------------------

    def invalidate(self, kind: str, subject: str) -> None:
        """A feed row (called once per row by Revocations)."""
        if kind == MEMBERSHIP:
            tenant_id, _, user_id = subject.partition("/")
            if user_id == "*":
                self._drop_tenant(tenant_id)
            else:
                self._touch((tenant_id, user_id))
                self._drop_member((tenant_id, user_id))
        elif kind == TENANT:
            self._drop_tenant(subject)
        elif kind == USER:
            self._touch(f"user:{subject}")
            self._users.pop(subject)
            self._flights.pop(("user", subject), None)

    def _touch(self, scope: Scope) -> None:
        self._epoch += 1
        if self._loads:
            self._touched[scope] = self._epoch
            if len(self._touched) > _MAX_TOUCHED:
                # Reads never all finished while invalidations kept coming: rather than grow,
                # distrust every read in flight.
                self._barrier = self._epoch
                self._touched.clear()

    def _drop_tenant(self, tenant_id: str) -> None:
        self._touch(tenant_id)
        self._tenants.pop(tenant_id)
        for user_id in self._by_tenant.pop(tenant_id, set()):
            self._members.pop((tenant_id, user_id))
        # Reads in flight may have read the old state: callers from now on start their own.
        for kind, key in list(self._flights):
            if (kind == "tenant" and key == tenant_id) or (kind == "member" and key[0] == tenant_id):
                del self._flights[(kind, key)]

    def _drop_member(self, key: tuple[str, str]) -> None:
        self._members.pop(key)
        self._forget_member(key)
        self._flights.pop(("member", key), None)

    def _forget_member(self, key: tuple[str, str]) -> None:
        tenant_id, user_id = key
        users = self._by_tenant.get(tenant_id)
        if users is not None:
            users.discard(user_id)
            if not users:
                del self._by_tenant[tenant_id]

    def _untouched_since(self, epoch: int, scopes: tuple[Scope, ...]) -> bool:
        return epoch >= self._barrier and all(self._touched.get(s, 0) <= epoch for s in scopes)

    # --- reads -------------------------------------------------------------------------------

    async def tenant_status(self, tenant_id: str) -> str | None:
        """`active`, `suspended` or `deleted`; None when there is no such tenant."""
        entry = self._tenants.get(tenant_id)
        if entry is not None:
            if time.monotonic() - entry.as_of >= self.max_age:
                self._load("tenant", tenant_id, (tenant_id,), lambda: self._read_tenant(tenant_id))
            return entry.value
        return await asyncio.shield(
            self._load("tenant", tenant_id, (tenant_id,), lambda: self._read_tenant(tenant_id))
        )

    async def member(self, tenant_id: str, user_id: str) -> MemberFacts | None:
        """The member's standing and grants; None when they are not a member."""
        key = (tenant_id, user_id)
        entry = self._members.get(key)
        if entry is not None:
            if time.monotonic() - entry.as_of >= self.max_age:
                self._load("member", key, (tenant_id, key), lambda: self._read_member(tenant_id, user_id))
            return entry.value
        return await asyncio.shield(
            self._load("member", key, (tenant_id, key), lambda: self._read_member(tenant_id, user_id))
        )

    async def user_status(self, user_id: str) -> str | None:
        """`active` or `disabled`; None when there is no such account. Never older than
        `user_max_age`: there is no feed to say it changed."""
        if len(self._asked) < self._users.capacity:
            self._asked.add(user_id)
        entry = self._users.get(user_id)
        if entry is not None and time.monotonic() - entry.as_of < self.user_max_age:
            return entry.value
        scope = f"user:{user_id}"
        statuses: dict[str, str | None] = await asyncio.shield(
            self._load("user", user_id, (scope,), lambda: self._users_of([user_id]))
        )
        return statuses[user_id]

    def _load(
        self, kind: str, key: Any, scopes: tuple[Scope, ...], read: Callable[[], Awaitable[Any]]
    ) -> asyncio.Task[Any]:
        """The one read of `key` in flight (concurrent misses share it), as a task of its own,
        so a caller that gives up does not cancel what the others wait for. Entries from a
        tenant-status or member read are stored here; account reads store themselves."""
        flight = (kind, key)
        task = self._flights.get(flight)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._read_and_keep(flight, scopes, read))
            self._flights[flight] = task
            task.add_done_callback(self._landed)
        return task

    async def _read_and_keep(
        self, flight: tuple[str, Any], scopes: tuple[Scope, ...], read: Callable[[], Awaitable[Any]]
    ) -> Any:
        kind, key = flight
        self._loads += 1
        epoch, began = self._epoch, time.monotonic()
        try:
            value = await read()
            if kind != "user" and self._untouched_since(epoch, scopes):
                if kind == "tenant":
                    self._tenants.put(key, Entry(value, began))
                else:
                    self._members.put(key, Entry(value, began))
                    self._by_tenant.setdefault(key[0], set()).add(key[1])
            return value
        finally:
            if self._flights.get(flight) is asyncio.current_task():
                del self._flights[flight]
            self._loads -= 1
            if not self._loads:
                self._touched.clear()

    @staticmethod
    def _landed(task: asyncio.Task[Any]) -> None:
        # A background refresh nobody awaits must not fail silently (nor warn at collection).
        if not task.cancelled() and task.exception() is not None:
            log.warning("reading access facts failed", exc_info=task.exception())

    async def _users_of(self, user_ids: list[str]) -> dict[str, str | None]:
        """Read accounts' statuses and keep those no invalidation touched meanwhile."""
        self._loads += 1
        epoch, began = self._epoch, time.monotonic()
        try:
            found = await self._read_users(user_ids)
            statuses: dict[str, str | None] = {u: found.get(u) for u in user_ids}
            for user_id, status in statuses.items():
                if self._untouched_since(epoch, (f"user:{user_id}",)):
                    self._users.put(user_id, Entry(status, began))
            return statuses
        finally:
            self._loads -= 1
            if not self._loads:
                self._touched.clear()

    # The database reads (one unit of work each).

    async def _read_tenant(self, tenant_id: str) -> str | None:
        async with self.db.unit_of_work(readonly=True) as uow:
            row = await store.get_tenant(uow.session, tenant_id)
        return row.status if row is not None else None

    async def _read_users(self, user_ids: list[str]) -> dict[str, str]:
        return await self.people.statuses(self.db, user_ids)

    async def _read_member(self, tenant_id: str, user_id: str) -> MemberFacts | None:
        async with self.db.unit_of_work(readonly=True) as uow:
            row = await store.get_membership(uow.session, tenant_id, user_id)
            if row is None:
                return None
            held = await access.standing(uow.session, tenant_id, user_id, row.roles)
            grants = await store.grants_of_member(uow.session, tenant_id, user_id)
        # Roles inherited from groups count like direct ones (a group carrying `admin` admits
        # its members to admin RPCs); permissions are the union of all roles'.
        membership = Membership(tenant_id, user_id, held.roles, held.permissions)
        return MemberFacts(held, grants, membership)

    # --- account statuses, kept fresh ----------------------------------------------------------

    async def refresh_users(self, batch: int = 500) -> None:
        """Re-read the status of every cached account asked about since the last refresh; the
        others age out and are read again if they are asked about."""
        asked, self._asked = self._asked, set()
        wanted = [u for u in asked if u in self._users]
        for start in range(0, len(wanted), batch):
            await self._users_of(wanted[start : start + batch])

    async def refresh_forever(self) -> None:
        """A background task of the server."""
        await periodic.every("tenants.account_statuses", self.user_refresh, self.refresh_users, logger=log)
