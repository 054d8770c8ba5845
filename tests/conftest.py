"""Shared fixtures: databases (SQLite always, PostgreSQL when configured) and a live server.

`NEXUS_TEST_POSTGRES_URL` / `NEXUS_TEST_REDIS_URL`: when set, tests that use them must run
and fail loudly if the service is unreachable; when unset they are skipped with a reason.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from sqlalchemy import create_engine, text

from nexus_server.app.server import NexusServer, create_server
from nexus_server.config import Settings
from nexus_server.db.migrate import upgrade
from nexus_server.logs import JsonFormatter
from tests.support import DnsZone, Inbox, free_port

POSTGRES_URL = os.environ.get("NEXUS_TEST_POSTGRES_URL", "")
REDIS_URL = os.environ.get("NEXUS_TEST_REDIS_URL", "")


def _fresh_postgres_database(base_url: str) -> tuple[str, str]:
    """Create a throwaway database beside the configured one; return (url, name)."""
    name = f"nexus_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base_url.replace("+psycopg", "+psycopg", 1), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as error:
        raise RuntimeError(
            f"NEXUS_TEST_POSTGRES_URL is set but PostgreSQL is unreachable ({error}); "
            "start it (see README) or unset the variable"
        ) from error
    finally:
        admin.dispose()
    return base_url.rsplit("/", 1)[0] + f"/{name}", name


def _drop_postgres_database(base_url: str, name: str) -> None:
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(autouse=True)
def _logging_left_as_found() -> Iterator[None]:
    """A test that runs the CLI in-process must not leave its JSON handler on the root logger:
    bound to that test's captured stderr, it fails on every later log line once pytest closes
    the stream, and printing a traceback per failed line slows the rest of the suite badly."""
    yield
    leaked = [h for h in logging.getLogger().handlers if isinstance(h.formatter, JsonFormatter)]
    assert not leaked, "the test left nexus's log handler on the root logger; restore it"


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated, empty database for the session: each integration test runs on both kinds."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("sqlite") / "nexus.db"
        url = f"sqlite+aiosqlite:///{path}"
        upgrade(url)
        yield url
        return
    if not POSTGRES_URL:
        pytest.skip("NEXUS_TEST_POSTGRES_URL is not set")
    url, name = _fresh_postgres_database(POSTGRES_URL)
    upgrade(url)
    yield url
    _drop_postgres_database(POSTGRES_URL, name)


@pytest.fixture(scope="session")
def dns_zone() -> Iterator[DnsZone]:
    """The loopback DNS server every test server asks for custom-domain TXT proofs."""
    zone = DnsZone()
    zone.start()
    yield zone
    zone.stop()


@pytest.fixture(scope="session")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory, dns_zone: DnsZone) -> Settings:
    var_dir: Path = tmp_path_factory.mktemp("var")
    return replace(
        Settings(),
        database_url=database_url,
        port=0,
        metrics_port=None,
        var_dir=var_dir,
        redis_url=None,
        # bcrypt's minimum cost: the suite registers hundreds of users (production keeps 12),
        # all from 127.0.0.1 (the sign-up limit per address has tests of its own).
        bcrypt_rounds=4,
        signups_per_address=1_000_000,
        dns_nameservers=(dns_zone.nameserver,),
        # The tests' webhook receivers listen on loopback, as a developer's would.
        webhooks_allow_private_urls=True,
        webhooks_poll_interval=timedelta(milliseconds=200),
    )


@pytest.fixture(scope="session")
async def server(settings: Settings) -> AsyncIterator[tuple[NexusServer, int]]:
    """A real grpc.aio server on 127.0.0.1:0, shared by a session's integration tests."""
    srv, port = await create_server(settings)
    await srv.start()
    yield srv, port
    await srv.stop(grace=1)


@pytest.fixture(scope="session")
async def channel(server: tuple[NexusServer, int]) -> AsyncIterator[grpc.aio.Channel]:
    _, port = server
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        await asyncio.wait_for(ch.channel_ready(), 10)
        yield ch


@pytest.fixture
async def smtp_server(settings: Settings, tmp_path: Path) -> AsyncIterator[tuple[grpc.aio.Channel, Inbox]]:
    """A server of its own whose mail goes to a real SMTP endpoint (aiosmtpd), on a fresh
    database (so no other server's mail sender takes its mail)."""
    from aiosmtpd.controller import Controller

    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    dropped = ""
    if settings.is_sqlite:
        url = f"sqlite+aiosqlite:///{tmp_path / 'mail.db'}"
    else:
        url, dropped = _fresh_postgres_database(POSTGRES_URL)
    await asyncio.to_thread(upgrade, url)
    own = replace(
        settings, database_url=url, smtp_url=f"smtp://127.0.0.1:{controller.port}", var_dir=tmp_path
    )
    server, port = await create_server(own)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await asyncio.wait_for(channel.channel_ready(), 10)
            yield channel, inbox
    finally:
        await server.stop(grace=1)
        controller.stop()
        if dropped:
            await asyncio.to_thread(_drop_postgres_database, POSTGRES_URL, dropped)
