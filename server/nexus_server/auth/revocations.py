"""Revocations that hold on every replica within a second.

A revocation (a session, a user, an API key, a tenant) is written to the `revocations`
table in the same transaction as the change that causes it. The writing replica applies
it as soon as the transaction commits; every other replica polls the rows created in the
last few seconds (an indexed range read) every `poll_interval`, so the delay is at most
one interval plus a commit. Re-reading overlapping windows is harmless: applying a
revocation twice is the same as once. The window's overlap covers transactions that
commit a little after their row's `create_time`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import bindparam, delete, insert, select

from nexus_server.common import periodic
from nexus_server.common.ids import new_id
from nexus_server.db.hot import hot_sql
from nexus_server.db.schema import revocations
from nexus_server.db.uow import Database, UnitOfWork

log = logging.getLogger("nexus.revocations")

Listener = Callable[[str, str], None]
_COLUMNS = (
    revocations.c.id,
    revocations.c.kind,
    revocations.c.subject,
    revocations.c.expire_time,
    revocations.c.create_time,
)
# The poll, as PostgreSQL text for the hot reader: every replica runs it four times a second,
# and through a unit of work (BEGIN, SELECT, ROLLBACK) it was a 2-6 ms stretch now and then
# (BENCH_PROBE, issue 18).
_RECENT = select(*_COLUMNS).where(revocations.c.create_time >= bindparam("since"))
_RECENT_SQL = hot_sql(_RECENT)


class Revocations:
    """The in-memory revocation set of this replica, kept fresh from the table."""

    def __init__(
        self, db: Database, *, poll_interval: float = 0.25, window: timedelta = timedelta(seconds=10)
    ):
        self.db = db
        self.poll_interval = poll_interval
        self.window = window
        self._revoked: dict[tuple[str, str], datetime | None] = {}
        self._seen: dict[str, datetime] = {}  # row id → create_time, for once-per-row listeners
        self._listeners: list[Listener] = []
        self._task: asyncio.Task[None] | None = None

    def is_revoked(self, kind: str, subject: str) -> bool:
        if (kind, subject) not in self._revoked:
            return False
        until = self._revoked[(kind, subject)]
        return until is None or until > self.db.clock.now()

    def on_revoke(self, listener: Listener) -> None:
        """Call `listener(kind, subject)` once for every feed row (cache invalidation); a
        kind may be used purely as an invalidation signal (e.g. `membership`)."""
        self._listeners.append(listener)

    async def revoke(
        self, uow: UnitOfWork, kind: str, subject: str, *, until: datetime | None = None
    ) -> None:
        """Record a revocation inside `uow`; it applies here on commit and elsewhere on poll."""
        now = uow.clock.now()
        row_id = new_id("rvk", at=now)
        await uow.session.execute(
            insert(revocations).values(
                id=row_id,
                kind=kind,
                subject=subject,
                create_time=now,
                expire_time=until,
            )
        )
        uow.after_commit(lambda: self._apply(row_id, kind, subject, until, now))

    def _apply(self, row_id: str, kind: str, subject: str, until: datetime | None, created: datetime) -> None:
        if row_id in self._seen:
            return
        self._seen[row_id] = created
        # The strongest revocation wins: forever (None) beats any time, later beats earlier,
        # so an invalidation signal (until=now) never shortens a standing revocation.
        key = (kind, subject)
        if key not in self._revoked:
            self._revoked[key] = until
        else:
            current = self._revoked[key]
            if current is not None and (until is None or until > current):
                self._revoked[key] = until
        for listener in self._listeners:
            listener(kind, subject)

    async def load(self) -> None:
        """Load every live revocation (at start)."""
        now = self.db.clock.now()
        async with self.db.unit_of_work(readonly=True) as uow:
            rows = await uow.session.execute(
                select(*_COLUMNS).where(
                    (revocations.c.expire_time.is_(None)) | (revocations.c.expire_time > now)
                )
            )
            for row in rows:
                self._apply(*row)

    async def poll_once(self) -> None:
        since = self.db.clock.now() - self.window
        if self.db.hot is not None:
            for row in await self.db.hot.fetch(_RECENT_SQL, {"since": since}):
                self._apply(*row)
        else:
            async with self.db.unit_of_work(readonly=True) as uow:
                for row in await uow.session.execute(_RECENT, {"since": since}):
                    self._apply(*row)
        # Rows older than twice the window can never be re-read; forget their ids.
        horizon = since - self.window
        for row_id in [r for r, created in self._seen.items() if created < horizon]:
            del self._seen[row_id]

    async def run(self) -> None:
        """Poll forever (a background task of the server)."""
        await self.load()
        await periodic.every("auth.revocations", self.poll_interval, self.poll_once, logger=log)

    async def prune(self) -> int:
        """Delete rows whose revocations have lapsed; returns how many."""
        async with self.db.unit_of_work() as uow:
            result = await uow.session.execute(
                delete(revocations).where(revocations.c.expire_time < uow.clock.now())
            )
        now = self.db.clock.now()
        for key, until in list(self._revoked.items()):
            if until is not None and until <= now:
                del self._revoked[key]
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
