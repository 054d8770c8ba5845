"""Access-token signing keys: Ed25519 (JWS `EdDSA`), stored sealed, named by their RFC 7638
thumbprint, and rotated without a moment where a verifier lacks a key.

A key's life: published in the JWKS at `create_time`; signs from `activate_time`, which a
rotation sets one JWKS cache lifetime later so every verifier has fetched it first; stops
signing at `retire_time` (the next key's activation); unpublished at `expire_time`, when the
last token it signed has expired.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import insert, or_, select, update

from nexus_server.common import periodic
from nexus_server.common.errors import Unavailable
from nexus_server.common.sealing import Sealer
from nexus_server.db.uow import Database, UnitOfWork
from nexus_server.identity.tables import signing_keys

log = logging.getLogger("nexus.identity.keys")
ALG = "EdDSA"
# Clock skew allowed between replicas and verifiers when retiring a key.
SKEW = timedelta(seconds=60)


@dataclass(frozen=True)
class SigningKey:
    kid: str
    alg: str
    public_jwk: dict[str, str]
    private: Ed25519PrivateKey
    public: Ed25519PublicKey
    create_time: datetime
    activate_time: datetime
    retire_time: datetime | None
    expire_time: datetime | None

    def published(self, now: datetime) -> bool:
        return self.create_time <= now and (self.expire_time is None or self.expire_time > now)

    def signs(self, now: datetime) -> bool:
        return self.activate_time <= now and (self.retire_time is None or self.retire_time > now)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_jwk(public: Ed25519PublicKey) -> dict[str, str]:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    members = {"crv": "Ed25519", "kty": "OKP", "x": _b64(raw)}
    # RFC 7638 thumbprint: SHA-256 of the required members in lexicographic order.
    kid = _b64(hashlib.sha256(json.dumps(members, separators=(",", ":")).encode()).digest())
    return {**members, "kid": kid, "use": "sig", "alg": ALG}


async def create_key(uow: UnitOfWork, sealer: Sealer, activate_time: datetime) -> str:
    private = Ed25519PrivateKey.generate()
    jwk = public_jwk(private.public_key())
    der = private.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    await uow.session.execute(
        insert(signing_keys).values(
            kid=jwk["kid"],
            alg=ALG,
            public_jwk=jwk,
            private_key=sealer.seal(der),
            create_time=uow.clock.now(),
            activate_time=activate_time,
        )
    )
    return jwk["kid"]


async def rotate(uow: UnitOfWork, sealer: Sealer, *, publish_ahead: timedelta, token_ttl: timedelta) -> str:
    """Publish a new key now that signs once every JWKS cache has seen it; the keys signing
    until then retire at that moment and stay published until their tokens have expired."""
    now = uow.clock.now()
    activate = now + publish_ahead
    await uow.session.execute(
        update(signing_keys)
        .where(or_(signing_keys.c.retire_time.is_(None), signing_keys.c.retire_time > activate))
        .values(retire_time=activate, expire_time=activate + token_ttl + SKEW)
    )
    return await create_key(uow, sealer, activate)


class KeyRing:
    """This replica's copy of the signing keys, reloaded periodically and on unknown kids."""

    def __init__(self, db: Database, sealer: Sealer, *, reload_interval: float = 30.0):
        self.db = db
        self.sealer = sealer
        self.reload_interval = reload_interval
        self._keys: dict[str, SigningKey] = {}
        self._last_reload = 0.0
        self._lock = asyncio.Lock()

    def _now(self) -> datetime:
        return self.db.clock.now()

    async def reload(self) -> None:
        async with self.db.unit_of_work(readonly=True) as uow:
            rows = (await uow.session.execute(select(signing_keys))).mappings().all()
        keys: dict[str, SigningKey] = {}
        for row in rows:
            private = serialization.load_der_private_key(self.sealer.open(row["private_key"]), None)
            if not isinstance(private, Ed25519PrivateKey):
                continue
            keys[row["kid"]] = SigningKey(
                kid=row["kid"],
                alg=row["alg"],
                public_jwk=dict(row["public_jwk"]),
                private=private,
                public=private.public_key(),
                create_time=row["create_time"],
                activate_time=row["activate_time"],
                retire_time=row["retire_time"],
                expire_time=row["expire_time"],
            )
        self._keys = keys
        self._last_reload = time.monotonic()

    async def ensure_signing_key(self) -> None:
        """Load the keys, creating a first key when none signs now (a fresh installation)."""
        async with self._lock:
            await self.reload()
            if any(k.signs(self._now()) for k in self._keys.values()):
                return
            async with self.db.unit_of_work() as uow:
                kid = await create_key(uow, self.sealer, uow.clock.now())
            log.info("created the first access-token signing key", extra={"kid": kid})
            await self.reload()

    async def ready(self) -> None:
        """Make sure a key signs now; call before opening the unit of work that issues
        tokens (creating a key needs its own transaction)."""
        if not any(k.signs(self._now()) for k in self._keys.values()):
            await self.ensure_signing_key()

    def signing_key(self) -> SigningKey:
        now = self._now()
        candidates = [k for k in self._keys.values() if k.signs(now)]
        if not candidates:
            raise Unavailable("no access-token signing key is ready yet; retry")
        return max(candidates, key=lambda k: k.activate_time)

    async def verifying_key(self, kid: str) -> SigningKey | None:
        key = self._keys.get(kid)
        if key is None and time.monotonic() - self._last_reload > 1.0:
            # A key rotated in by another replica or the CLI; at most one reload a second
            # so that made-up kids cannot hammer the database.
            async with self._lock:
                if time.monotonic() - self._last_reload > 1.0:
                    await self.reload()
            key = self._keys.get(kid)
        if key is None or not key.published(self._now()):
            return None
        return key

    def jwks(self) -> list[dict[str, Any]]:
        now = self._now()
        published = [k for k in self._keys.values() if k.published(now)]
        published.sort(key=lambda k: (k.create_time, k.activate_time), reverse=True)
        return [dict(k.public_jwk) for k in published]

    async def run(self) -> None:
        """Reload forever, so rotations elsewhere are picked up (a background task)."""
        await periodic.every("identity.signing_keys", self.reload_interval, self.reload, logger=log)
