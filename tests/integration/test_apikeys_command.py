"""`nexus apikey issue`: an operator issues a working key for a tenant from the command line."""

from __future__ import annotations

import asyncio
import hashlib
import logging

import pytest
from sqlalchemy import select

from nexus_server import cli
from nexus_server.apikeys.tables import api_keys
from nexus_server.app.server import NexusServer
from nexus_server.common.ids import new_id
from tests.support import make_tenant, unique


async def test_issue_prints_the_full_key_once_and_stores_only_its_digest(
    server: tuple[NexusServer, int],
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    srv = server[0]
    slug = unique("cli")
    tenant = await make_tenant(srv, new_id("usr"), slug=slug)
    monkeypatch.setenv("NEXUS_DATABASE_URL", database_url)
    code = await _run(
        ["apikey", "issue", "--tenant", slug, "--scopes", "events:publish,usage:write", "--name", "crm"]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    full_key = out.strip()
    assert full_key.startswith("eco_api_") and "\n" not in full_key
    assert full_key not in err
    async with srv.db.unit_of_work(readonly=True) as uow:
        row = (
            (await uow.session.execute(select(api_keys).where(api_keys.c.tenant_id == tenant)))
            .mappings()
            .one()
        )
    assert row["id"] == full_key.split(".")[0]
    assert row["secret_hash"] == hashlib.sha256(full_key.encode()).hexdigest()
    assert sorted(row["scopes"]) == ["events:publish", "usage:write"]


async def test_an_unknown_tenant_or_scope_is_refused_with_a_message(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NEXUS_DATABASE_URL", database_url)
    assert await _run(["apikey", "issue", "--tenant", "no-such-tenant", "--scopes", "*", "--name", "x"]) == 1
    assert "no tenant" in capsys.readouterr().err


async def _run(argv: list[str]) -> int:
    # The command runs its own event loop, so run it off this one. It also configures the root
    # logger as a process should, with a handler bound to this test's captured stderr: restore
    # the suite's logging after it, or every later log line fails on a closed stream (and
    # prints a traceback per line, which slowed the rest of the suite to a crawl).
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        return await asyncio.to_thread(cli.main, argv)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
