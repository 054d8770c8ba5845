"""A throwaway PostgreSQL database for the scenarios that need one (100k keys, 10k tenants):
created on first use, so `--list` and other scenarios create none, and dropped at exit."""

from __future__ import annotations

import atexit
import os
import socket
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from bench.servers import ServerSpec

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
W = TypeVar("W")


class SeedOnce(Generic[W]):
    """What a bench run seeds into its database once, for every row that uses it."""

    def __init__(self, what: str, seed: Callable[[str], Awaitable[W]]):
        self.what = what  # for the progress line: "100000 API keys"
        self.seed = seed
        self.value: W | None = None

    def get(self, database_url: str) -> W:
        if self.value is None:
            import asyncio

            began = time.monotonic()
            self.value = asyncio.run(self.seed(database_url))
            print(f"bench: seeded {self.what} in {time.monotonic() - began:.1f} s", file=sys.stderr)
        return self.value


def psycopg_url(url: str) -> str:
    """The plain libpq form of a SQLAlchemy URL."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def reachable(url: str) -> str:
    """'' when PostgreSQL at `url` answers, else why not."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    try:
        with socket.create_connection((parsed.host or "127.0.0.1", parsed.port or 5432), timeout=1.0):
            pass
    except OSError as error:
        return f"no PostgreSQL at {parsed.host}:{parsed.port or 5432} ({error})"
    try:
        import psycopg

        with psycopg.connect(psycopg_url(url), connect_timeout=3):
            return ""
    except Exception as error:
        return f"cannot connect to {parsed.render_as_string(hide_password=True)}: {error}"


class BenchDatabase:
    """One database for this bench run on the server `BENCH_POSTGRES_URL` names (or the local
    one), shared by the scenarios that use the same instance."""

    def __init__(self) -> None:
        self.server_url = os.environ.get("BENCH_POSTGRES_URL") or DEFAULT_URL
        self.url = ""

    def database_url(self) -> str:
        if not self.url:
            import psycopg
            from sqlalchemy.engine import make_url

            name = f"bench_{uuid.uuid4().hex[:12]}"
            with psycopg.connect(psycopg_url(self.server_url), autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            atexit.register(self._drop, name)
            self.url = make_url(self.server_url).set(database=name).render_as_string(hide_password=False)
        return self.url

    def _drop(self, name: str) -> None:
        import psycopg

        try:
            with psycopg.connect(psycopg_url(self.server_url), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except Exception as error:
            print(f"bench: could not drop database {name}: {error}", file=sys.stderr)

    def server_spec(self, kind: str = "nexus", **settings: Any) -> ServerSpec:
        """A server of `kind` (bench.runner) on this database with these other settings; the
        database is made when the server starts."""
        return ServerSpec(kind, settings=_LazySettings(self, settings))


class _LazySettings(Mapping[str, Any]):
    def __init__(self, db: BenchDatabase, others: Mapping[str, Any] | None = None):
        self.db = db
        self.others = dict(others or {})

    def __getitem__(self, name: str) -> Any:
        if name == "database_url":
            return self.db.database_url()
        return self.others[name]

    def __iter__(self) -> Iterator[str]:
        return iter(("database_url", *self.others))

    def __len__(self) -> int:
        return 1 + len(self.others)
