"""Engines for the embedded SQLite default and for PostgreSQL (psycopg 3), async and sync."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from nexus_server.common.private_files import private_dir, private_file


def sync_url(url: str) -> str:
    """The blocking-driver form of an async URL (for Alembic and tools)."""
    return url.replace("sqlite+aiosqlite", "sqlite", 1)


# FULL: WAL is synced at every commit, so an acknowledged write (a credit, an event, a revoked
# key) survives power loss; NORMAL syncs only at checkpoints and may lose the last commits.
# The cost, measured on the 2-core CI-class machine (ext4), 2,000 one-event commits through
# Database.unit_of_work().append_event, NORMAL and FULL alternated three times: 5.1 ms and
# 7.0 ms a commit (medians), about +1.9 ms (+36 %) for the fsync. Every path pays it, not only
# money and events: a write the caller was told about must not vanish, and the embedded store
# is for one machine; PostgreSQL (production) syncs every commit anyway.
SQLITE_SYNCHRONOUS = "FULL"


def private_sqlite_file(url: str) -> None:
    """Create the SQLite file owner-only (0600, its missing directories 0700) before SQLite
    opens it, and tighten one that exists: it holds every account and the sealed signing keys.
    SQLite gives its -wal and -shm files the database file's mode; older ones are tightened."""
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    private_dir(path.parent, tighten=False)
    for each in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if each == path or each.exists():
            private_file(each)


def _sqlite_setup(engine: Engine) -> None:
    # WAL lets readers run beside the one writer; BEGIN IMMEDIATE takes the write lock at the
    # start of a transaction, so two writers queue on busy_timeout instead of deadlocking
    # when both try to upgrade a read lock (which SQLite answers with an instant SQLITE_BUSY).
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={SQLITE_SYNCHRONOUS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        mode = "DEFERRED" if conn.get_execution_options().get("readonly") else "IMMEDIATE"
        conn.exec_driver_sql(f"BEGIN {mode}")


# Every engine has hide_parameters: a database error's text (logged, and carried by the
# exception) never holds bound values, which can be emails, token digests or sealed secrets.


def create_async(url: str, *, echo: bool = False) -> AsyncEngine:
    if url.startswith("sqlite"):
        private_sqlite_file(url)
        # Every unit of work ends its transaction itself (commit or rollback), so the pool's
        # rollback on return is redundant; with aiosqlite it costs a thread handoff
        # (~0.1 ms) per transaction.
        engine = create_async_engine(
            url,
            echo=echo,
            hide_parameters=True,
            connect_args={"timeout": 30},
            pool_size=8,
            max_overflow=8,
            pool_reset_on_return=None,
        )
        _sqlite_setup(engine.sync_engine)
        return engine
    # No pre-ping (a SELECT 1 at every checkout, a round trip of ~0.5 ms of this process's CPU
    # on the reference machine): after a PostgreSQL restart the first statement on a stale
    # connection fails, and SQLAlchemy then invalidates the whole pool, so a restart costs a
    # replica about one failed call. The rollback on return stays: after the unit of work's
    # own commit or rollback psycopg skips it without a round trip, and when a cancelled
    # call left a transaction open it is what keeps that connection's locks from outliving it.
    return create_async_engine(
        url, echo=echo, hide_parameters=True, pool_size=10, max_overflow=20, pool_pre_ping=False
    )


def create_sync(url: str) -> Engine:
    url = sync_url(url)
    if url.startswith("sqlite"):
        private_sqlite_file(url)
        engine = create_engine(url, connect_args={"timeout": 30}, hide_parameters=True)
        _sqlite_setup(engine)
        return engine
    return create_engine(url, pool_pre_ping=True, hide_parameters=True)
