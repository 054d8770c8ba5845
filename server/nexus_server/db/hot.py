"""One-statement reads on the request path, off the unit of work (PostgreSQL).

A read through a unit of work is a session, a pooled connection, BEGIN, the statement and
ROLLBACK: three round trips and ~1 ms of this process's CPU for one indexed row, most of a
VerifyApiKey that misses the key cache (issue 18 measured 0.9-1.1 ms a read that way, and
0.35-0.43 ms as below). A `HotReader` runs one statement with no transaction (a single
SELECT sees one snapshot anyway) on a connection of its own in autocommit, prepared on the
server the first time it is seen, and hands back plain tuples for the store to shape.

One connection, one statement at a time: its users batch their misses (the key verifier
reads many keys in one statement, one read out at a time), so a pool would only add
checkouts. A broken connection is dropped and the read tried once more on a fresh one (a
read is safe to repeat): after a PostgreSQL restart the first read succeeds rather than
failing a batch of calls. SQLite has none (`Database.hot` is None there): its reads are a
file away and its stores read through the unit of work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import psycopg
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import URL
from sqlalchemy.sql import ClauseElement

_DIALECT = postgresql.psycopg.dialect()  # type: ignore[no-untyped-call]


def hot_sql(statement: ClauseElement) -> str:
    """A Core statement as the hot reader's text (`%(name)s` parameters), compiled once at
    import by the store that owns it, so it follows the table's columns."""
    return str(statement.compile(dialect=_DIALECT))


class HotReader:
    def __init__(self, url: URL):
        # libpq's URL: SQLAlchemy's without the driver name. TimeZone UTC, so timestamps come
        # back in UTC as the unit of work's do.
        self._conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()

    async def fetch(self, sql: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """The rows of one SELECT (`%(name)s` parameters), as tuples in its column order."""
        async with self._lock:
            fresh = self._conn is None or self._conn.closed
            try:
                return await self._fetch(sql, params)
            except psycopg.OperationalError:
                self._forget()
                if fresh:
                    raise
            except BaseException:
                self._forget()  # cancelled mid-statement: the connection may be mid-protocol
                raise
            try:
                return await self._fetch(sql, params)  # the connection was stale: once more
            except BaseException:
                self._forget()
                raise

    async def _fetch(self, sql: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True, options="-c TimeZone=UTC"
            )
        cursor = await self._conn.execute(sql, params, prepare=True)
        return await cursor.fetchall()

    def _forget(self) -> None:
        """Close the connection at once, without a round trip (it may be broken, or in the
        middle of a statement); the next read opens another."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.pgconn.finish()

    async def close(self) -> None:
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                await conn.close()
