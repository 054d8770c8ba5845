"""One unit of work per RPC: a transaction, the events it appends, and after-commit hooks.

Workflows take a UnitOfWork and never open or commit transactions themselves (Cosmic
Python's service layer); stores take `uow.session`. Events appended here commit or roll
back with the change they describe, so none is lost and none is phantom.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from nexus_server.common.clock import Clock, SystemClock
from nexus_server.common.ids import new_id
from nexus_server.db.hot import HotReader
from nexus_server.db.schema import event_streams, events

PLATFORM_STREAM = ""  # tenant_id of events that belong to no tenant (user.registered, …)


@dataclass(frozen=True)
class StoredEvent:
    id: str
    tenant_id: str
    sequence: int
    type: str
    source: str
    subject: str
    time: datetime
    data: dict[str, Any]
    idempotency_key: str | None
    create_time: datetime  # when appended (server clock); `time` is when it happened
    publisher_api_key_id: str = ""  # empty for Nexus's own events


AfterCommit = Callable[[], Awaitable[None] | None]


class Database:
    """The engine, its session factory, and who to tell when events are committed."""

    def __init__(self, engine: AsyncEngine, clock: Clock | None = None):
        self.engine = engine
        self.clock: Clock = clock or SystemClock()
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)
        # Called with the committed events of each unit of work (subscriptions, NOTIFY).
        self.event_listeners: list[Callable[[list[StoredEvent]], Awaitable[None] | None]] = []
        # SQLite has one writer at a time, and its busy handler polls with growing sleeps, so
        # under steady contention a waiting writer can starve past busy_timeout ("database is
        # locked"). Queue this process's writers here instead, first come first served.
        self.write_lock: asyncio.Lock | None = asyncio.Lock() if engine.dialect.name == "sqlite" else None
        # One-statement reads of the request path, off the unit of work (PostgreSQL only).
        self.hot: HotReader | None = HotReader(engine.url) if engine.dialect.name == "postgresql" else None

    def unit_of_work(self, *, readonly: bool = False) -> UnitOfWork:
        return UnitOfWork(self, readonly=readonly)

    async def dispose(self) -> None:
        if self.hot is not None:
            await self.hot.close()
        await self.engine.dispose()


class UnitOfWork:
    def __init__(self, db: Database, *, readonly: bool = False):
        self.db = db
        self.readonly = readonly
        self.clock = db.clock
        self._appended: list[StoredEvent] = []
        self._after_commit: list[AfterCommit] = []
        self._session: AsyncSession | None = None
        self._holds_write_lock = False

    @property
    def session(self) -> AsyncSession:
        if self._session is None:
            raise RuntimeError("unit of work used outside `async with`")
        return self._session

    async def __aenter__(self) -> UnitOfWork:
        if self.db.write_lock is not None and not self.readonly:
            await self.db.write_lock.acquire()
            self._holds_write_lock = True
        self._session = self.db.sessions()
        if self.readonly:
            await self._session.connection(execution_options={"readonly": True})
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        session = self.session
        try:
            if exc_type is None and not self.readonly:
                await session.commit()
            else:
                await session.rollback()
        finally:
            try:
                await session.close()
            finally:
                self._session = None
                if self._holds_write_lock and self.db.write_lock is not None:
                    self._holds_write_lock = False
                    self.db.write_lock.release()
        if exc_type is None:
            await self._run_after_commit()

    def after_commit(self, hook: AfterCommit) -> None:
        """Run `hook` once the transaction has committed (never if it rolls back)."""
        self._after_commit.append(hook)

    async def _run_after_commit(self) -> None:
        for hook in self._after_commit:
            result = hook()
            if result is not None:
                await result
        if self._appended:
            for listener in self.db.event_listeners:
                result = listener(list(self._appended))
                if result is not None:
                    await result

    async def append_event(
        self,
        type: str,
        data: dict[str, Any],
        *,
        tenant_id: str = PLATFORM_STREAM,
        subject: str = "",
        source: str = "nexus",
        idempotency_key: str | None = None,
        time: datetime | None = None,
        publisher_api_key_id: str = "",
    ) -> StoredEvent:
        """Append an event to `tenant_id`'s log inside this transaction and return it.

        The sequence comes from the tenant's head row, incremented here: the row lock is held
        to commit, so a tenant's events commit in sequence order with no gaps.
        """
        if self.readonly:
            raise RuntimeError("append_event in a read-only unit of work")
        session = self.session
        # One statement creates the head row on a tenant's first event or bumps it: the
        # row lock it takes is held to commit, serialising a tenant's appends.
        dialect_insert = pg_insert if self.db.engine.dialect.name == "postgresql" else sqlite_insert
        upsert = (
            dialect_insert(event_streams)
            .values(tenant_id=tenant_id, head_sequence=1)
            .on_conflict_do_update(
                index_elements=[event_streams.c.tenant_id],
                set_={"head_sequence": event_streams.c.head_sequence + 1},
            )
            .returning(event_streams.c.head_sequence)
        )
        head = int((await session.execute(upsert)).scalar_one())
        now = self.clock.now()
        event = StoredEvent(
            id=new_id("evt", at=now),
            tenant_id=tenant_id,
            sequence=head,
            type=type,
            source=source,
            subject=subject,
            time=time or now,
            data=data,
            idempotency_key=idempotency_key,
            create_time=now,
            publisher_api_key_id=publisher_api_key_id,
        )
        await session.execute(
            insert(events).values(
                id=event.id,
                tenant_id=event.tenant_id,
                sequence=event.sequence,
                type=event.type,
                source=event.source,
                subject=event.subject,
                time=event.time,
                data=event.data,
                idempotency_key=event.idempotency_key,
                create_time=event.create_time,
                publisher_api_key_id=event.publisher_api_key_id or None,
            )
        )
        self._appended.append(event)
        return event

    async def head_sequence(self, tenant_id: str) -> int:
        row = await self.session.execute(
            select(event_streams.c.head_sequence).where(event_streams.c.tenant_id == tenant_id)
        )
        return int(row.scalar_one_or_none() or 0)
