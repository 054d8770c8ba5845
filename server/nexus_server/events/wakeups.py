"""Wake-ups across replicas through PostgreSQL LISTEN/NOTIFY (the log stays the truth).

After each commit that appended events, this process sends `NOTIFY nexus_events,
'<tenant_id>:<head>'` (coalesced per tenant while a send is in flight); every process
LISTENs and wakes that tenant's tailer, which then reads the log. A NOTIFY lost to a crash
between commit and send, or to a dropped LISTEN connection, costs latency only: the hub's
head poll catches up, and every reconnect wakes all tailers.
"""

from __future__ import annotations

import asyncio
import logging

import psycopg
from sqlalchemy.engine import make_url

from nexus_server.db.uow import StoredEvent
from nexus_server.events.hub import Hub

log = logging.getLogger("nexus.events")

CHANNEL = "nexus_events"
_RETRY_SECONDS = 1.0


def conninfo(database_url: str) -> str:
    """psycopg's form of a SQLAlchemy `postgresql+psycopg://` URL."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


class PgWakeups:
    def __init__(self, database_url: str, hub: Hub):
        self._conninfo = conninfo(database_url)
        self.hub = hub
        self._heads: dict[str, int] = {}
        self._sender: psycopg.AsyncConnection[object] | None = None
        self._flush: asyncio.Task[None] | None = None
        self._listener: psycopg.AsyncConnection[object] | None = None
        self._closing = False

    def on_commit(self, batch: list[StoredEvent]) -> None:
        for event in batch:
            if event.tenant_id and event.sequence > self._heads.get(event.tenant_id, 0):
                self._heads[event.tenant_id] = event.sequence
        if self._heads and (self._flush is None or self._flush.done()):
            self._flush = asyncio.create_task(self._send())

    async def _send(self) -> None:
        while self._heads:
            heads, self._heads = self._heads, {}
            try:
                if self._sender is None or self._sender.closed:
                    self._sender = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
                for tenant_id, head in heads.items():
                    await self._sender.execute("SELECT pg_notify(%s, %s)", (CHANNEL, f"{tenant_id}:{head}"))
            except Exception:
                log.warning("NOTIFY failed; replicas will catch up by polling", exc_info=True)
                await self._close_sender()
                return

    async def listen_forever(self) -> None:
        """Hold a LISTEN connection for the server's life, reconnecting after failures."""
        while not self._closing:
            try:
                self._listener = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
                await self._listener.execute(f"LISTEN {CHANNEL}")
                self.hub.wake_all()  # whatever was announced while we were not listening
                async for note in self._listener.notifies():
                    tenant_id, _, head = note.payload.rpartition(":")
                    if head.isdigit():
                        self.hub.on_remote(tenant_id, int(head))
            except asyncio.CancelledError:
                raise
            except Exception:
                if self._closing:
                    return
                log.warning("LISTEN connection lost; reconnecting", exc_info=True)
            finally:
                await self._close_listener()
            await asyncio.sleep(_RETRY_SECONDS)

    async def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None and not listener.closed:
            await listener.close()

    async def _close_sender(self) -> None:
        sender, self._sender = self._sender, None
        if sender is not None and not sender.closed:
            await sender.close()

    async def close(self) -> None:
        self._closing = True
        if self._flush is not None:
            await asyncio.gather(self._flush, return_exceptions=True)
        await self._close_sender()
        await self._close_listener()
