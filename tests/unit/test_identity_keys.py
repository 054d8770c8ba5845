"""Signing-key rotation: published before it signs, the old key kept until its tokens expire."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from nexus_server.common.clock import FrozenClock
from nexus_server.common.sealing import Sealer
from nexus_server.db.engine import create_async
from nexus_server.db.migrate import upgrade
from nexus_server.db.uow import Database
from nexus_server.identity import keys

CACHE = timedelta(minutes=5)
TTL = timedelta(minutes=15)


@pytest.fixture
async def ring(tmp_path: Path) -> AsyncIterator[tuple[keys.KeyRing, FrozenClock]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'keys.db'}"
    await asyncio.to_thread(upgrade, url)
    clock = FrozenClock()
    db = Database(create_async(url), clock)
    yield keys.KeyRing(db, Sealer("a-secret-of-sixteen+", "signing-keys")), clock
    await db.dispose()


async def _rotate(ring: keys.KeyRing) -> str:
    async with ring.db.unit_of_work() as uow:
        kid = await keys.rotate(uow, ring.sealer, publish_ahead=CACHE, token_ttl=TTL)
    await ring.reload()
    return kid


def _published(ring: keys.KeyRing) -> list[str]:
    return [k["kid"] for k in ring.jwks()]


async def test_a_rotated_key_is_published_at_once_but_signs_after_the_cache_time(
    ring: tuple[keys.KeyRing, FrozenClock],
) -> None:
    keyring, clock = ring
    await keyring.ready()
    old = keyring.signing_key().kid
    new = await _rotate(keyring)
    assert _published(keyring) == [new, old]
    assert keyring.signing_key().kid == old
    clock.advance(CACHE)
    assert keyring.signing_key().kid == new


async def test_the_old_key_stays_published_until_its_last_token_expires(
    ring: tuple[keys.KeyRing, FrozenClock],
) -> None:
    keyring, clock = ring
    await keyring.ready()
    old = keyring.signing_key().kid
    new = await _rotate(keyring)
    clock.advance(CACHE + TTL)
    assert old in _published(keyring)
    clock.advance(keys.SKEW + timedelta(seconds=1))
    assert _published(keyring) == [new]
    assert await keyring.verifying_key(old) is None


async def test_private_keys_are_stored_sealed(ring: tuple[keys.KeyRing, FrozenClock]) -> None:
    from cryptography.hazmat.primitives import serialization
    from sqlalchemy import select

    from nexus_server.identity.tables import signing_keys

    keyring, _ = ring
    await keyring.ready()
    raw = keyring.signing_key().private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    async with keyring.db.unit_of_work(readonly=True) as uow:
        stored = (await uow.session.execute(select(signing_keys.c.private_key))).scalar_one()
    assert raw not in stored
    assert keyring.sealer.open(stored).endswith(raw)
