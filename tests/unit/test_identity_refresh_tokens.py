"""Refresh tokens: the successor is a function of its predecessor, the tag says which tokens
this server issued to which session, and the rare branches of a refresh (a retry after the
grace window, an expired token) on a clock the test moves."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from nexus_server.app.server import NexusServer, create_server
from nexus_server.common.clock import FrozenClock
from nexus_server.common.errors import Unauthenticated
from nexus_server.common.ids import new_id
from nexus_server.config import Settings
from nexus_server.db.migrate import upgrade
from nexus_server.identity import accounts, refresh_tokens
from nexus_server.identity.deps import Client, Identity

KEY = b"k" * 32
PASSWORD = "Refresh-Password-123!"


def test_a_successor_is_always_the_same_and_names_the_same_session() -> None:
    session_id = new_id("ses")
    token = refresh_tokens.first(KEY, session_id)
    successor = refresh_tokens.successor(KEY, session_id, token)
    assert successor == refresh_tokens.successor(KEY, session_id, token) != token
    assert refresh_tokens.session_of(KEY, token) == refresh_tokens.session_of(KEY, successor) == session_id
    assert len(successor) <= refresh_tokens.MAX_CHARS


def test_a_token_not_issued_by_this_key_names_no_session() -> None:
    session_id = new_id("ses")
    token = refresh_tokens.first(KEY, session_id)
    prefix, body = token[:4], token[4:]
    _, secret, tag = body.split(".")
    forged = [
        refresh_tokens.first(b"another key" * 3, session_id),  # another server's
        f"{prefix}{new_id('ses')}.{secret}.{tag}",  # moved to another session
        f"{prefix}{session_id}.{secret[::-1]}.{tag}",  # another secret
        f"{prefix}{session_id}.{secret}.{tag[::-1]}",  # another tag
        token + "x",
        "nxr_" + "x" * 43,
        token.replace(".", "é", 1),
        "",
    ]
    assert [refresh_tokens.session_of(KEY, t) for t in forged] == [None] * len(forged)


@pytest.fixture
async def identity(tmp_path: Path) -> AsyncIterator[tuple[Identity, FrozenClock]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'nexus.db'}"
    upgrade(url)
    settings = dataclasses.replace(
        Settings(), database_url=url, port=0, metrics_port=None, var_dir=tmp_path, bcrypt_rounds=4
    )
    clock = FrozenClock()
    server: NexusServer
    server, _ = await create_server(settings, clock=clock)
    try:
        yield server.capabilities.identity, clock
    finally:
        await server.stop(0)


async def _register(deps: Identity) -> str:
    _, pair = await accounts.register(
        deps,
        email=f"{new_id('usr').lower()}@example.com",
        password=PASSWORD,
        display_name="",
        client=Client(),
    )
    return pair.refresh_token


async def _refresh(deps: Identity, token: str) -> str:
    return (await accounts.refresh(deps, refresh_token=token, tenant_id="")).refresh_token


async def _reason(deps: Identity, token: str) -> str:
    with pytest.raises(Unauthenticated) as caught:
        await _refresh(deps, token)
    return caught.value.reason or ""


async def test_a_retry_of_the_predecessor_after_the_grace_window_is_reuse(
    identity: tuple[Identity, FrozenClock],
) -> None:
    deps, clock = identity
    first = await _register(deps)
    current = await _refresh(deps, first)
    clock.advance(timedelta(seconds=31))
    assert await _reason(deps, first) == "REFRESH_TOKEN_REUSED"
    assert await _reason(deps, current) == "REFRESH_TOKEN_INVALID"  # the session has ended


async def test_a_retry_of_the_predecessor_inside_the_grace_window_gets_the_current_token(
    identity: tuple[Identity, FrozenClock],
) -> None:
    deps, clock = identity
    first = await _register(deps)
    current = await _refresh(deps, first)
    clock.advance(timedelta(seconds=29))
    assert await _refresh(deps, first) == current
    assert await _refresh(deps, current) != current  # still the live, unspent token


async def test_an_unspent_token_past_its_expiry_is_expired_and_the_session_is_kept(
    identity: tuple[Identity, FrozenClock],
) -> None:
    deps, clock = identity
    first = await _register(deps)
    clock.advance(deps.settings.refresh_token_ttl + timedelta(seconds=1))
    assert await _reason(deps, first) == "REFRESH_TOKEN_EXPIRED"
    assert await _reason(deps, first) == "REFRESH_TOKEN_EXPIRED"  # not mistaken for reuse
