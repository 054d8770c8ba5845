"""Emailed single-use tokens: email verification and password reset (1 hour, stored hashed).

A new token of a kind spends the user's earlier unused ones of that kind, so only the latest
link works.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from nexus_server.common.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    PreconditionViolation,
)
from nexus_server.db.uow import UnitOfWork
from nexus_server.identity import store
from nexus_server.identity.digests import digest, new_token

VERIFY_EMAIL = "verify_email"
RESET_PASSWORD = "reset_password"
LIFETIME = timedelta(hours=1)
_PREFIX = {VERIFY_EMAIL: "nxv_", RESET_PASSWORD: "nxp_"}
MAX_TOKEN_CHARS = 256


async def issue(uow: UnitOfWork, user: store.UserRow, purpose: str) -> str:
    now = uow.clock.now()
    await store.retire_one_time(uow.session, user.id, purpose, now)
    token = new_token(_PREFIX[purpose])
    await store.insert_one_time(
        uow.session,
        store.OneTimeRow(digest(token), user.id, purpose, user.email, now, now + LIFETIME, None),
    )
    return token


async def recently_issued(uow: UnitOfWork, user_id: str, purpose: str, within: timedelta) -> bool:
    latest = await store.latest_one_time(uow.session, user_id, purpose)
    return latest is not None and uow.clock.now() - latest.create_time < within


def check_shape(token: str, field: str = "token") -> None:
    if not token:
        raise InvalidArgument(FieldViolation(field, "is required"))
    if len(token) > MAX_TOKEN_CHARS:
        raise InvalidArgument(FieldViolation(field, f"must be at most {MAX_TOKEN_CHARS} characters"))


async def check(uow: UnitOfWork, token: str, purpose: str) -> store.OneTimeRow:
    """What `redeem` would refuse, refused without spending the token: run before costly work
    (hashing a new password) so a made-up token costs the server one read."""
    row = await store.get_one_time(uow.session, digest(token))
    return _usable(row, purpose, uow.clock.now())


async def redeem(uow: UnitOfWork, token: str, purpose: str) -> store.OneTimeRow:
    """Spend the token (shape already checked) and return it, or say why it cannot be used."""
    row = _usable(await store.get_one_time(uow.session, digest(token)), purpose, uow.clock.now())
    if not await store.use_one_time(uow.session, row.token_hash, uow.clock.now()):
        raise FailedPrecondition(
            "this link was already used", reason="ONE_TIME_TOKEN_USED", violations=_AGAIN
        )
    return row


_AGAIN = [PreconditionViolation("TOKEN", "token", "request a new email")]


def _usable(row: store.OneTimeRow | None, purpose: str, now: datetime) -> store.OneTimeRow:
    if row is None or row.purpose != purpose:
        raise InvalidArgument(
            FieldViolation("token", "is not a valid link token; request a new email"),
            reason="ONE_TIME_TOKEN_INVALID",
        )
    if row.used_time is not None:
        raise FailedPrecondition(
            "this link was already used or replaced by a newer one",
            reason="ONE_TIME_TOKEN_USED",
            violations=_AGAIN,
        )
    if row.expire_time <= now:
        raise FailedPrecondition("this link has expired", reason="ONE_TIME_TOKEN_EXPIRED", violations=_AGAIN)
    return row
