"""TOTP second factor (RFC 6238 via pyotp: SHA-1, 6 digits, 30 s) and recovery codes.

Secrets are sealed at rest; a code is accepted for the adjacent periods too (clock drift)
but never twice, since the last accepted period is recorded. Recovery codes are ten random
`xxxxx-xxxxx` strings, stored as SHA-256 of their normalised form, each usable once.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

import pyotp
from sqlalchemy import or_, update

from nexus_server.common.sealing import Sealer
from nexus_server.db.uow import UnitOfWork
from nexus_server.identity import store
from nexus_server.identity.digests import digest
from nexus_server.identity.tables import users

ISSUER = "Nexus"
PENDING_FOR = timedelta(minutes=10)
PERIOD = 30
MAX_CODE_CHARS = 32
_RECOVERY_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def new_secret() -> str:
    return pyotp.random_base32(32)


def otpauth_uri(secret: str, email: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=ISSUER)


def new_recovery_codes(count: int = 10) -> list[str]:
    codes = []
    for _ in range(count):
        raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(10))
        codes.append(f"{raw[:5]}-{raw[5:]}")
    return codes


def normalise_recovery(code: str) -> str:
    return code.strip().lower().replace("-", "").replace(" ", "")


def matching_step(secret: str, code: str, now: datetime) -> int | None:
    """The 30 s period (−1, 0, +1 around now) whose code is `code`, if any."""
    code = code.strip()
    if len(code) != 6 or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret)
    current = int(now.timestamp()) // PERIOD
    for step in (current, current - 1, current + 1):
        if secrets.compare_digest(totp.at(step * PERIOD), code):
            return step
    return None


async def accept_code(uow: UnitOfWork, sealer: Sealer, user: store.UserRow, code: str) -> bool:
    """Spend a TOTP code or recovery code of a TOTP-enabled user; False if not valid now."""
    if user.totp_secret is None or not code or len(code) > MAX_CODE_CHARS:
        return False
    secret = sealer.open(user.totp_secret).decode()
    step = matching_step(secret, code, uow.clock.now())
    if step is not None:
        # Compare-and-set on the last accepted period: a code is good once, even in a race.
        result = await uow.session.execute(
            update(users)
            .where(
                users.c.id == user.id, or_(users.c.totp_last_step.is_(None), users.c.totp_last_step < step)
            )
            .values(totp_last_step=step)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]
    recovery = normalise_recovery(code)
    if len(recovery) != 10 or not recovery.isalnum():
        return False
    return await store.spend_recovery_code(uow.session, user.id, digest(recovery), uow.clock.now())
