"""Persistence of the identity capability (SQLAlchemy Core; no rules here)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import Select, any_, bindparam, case, delete, exists, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from nexus_server.common.ids import new_id
from nexus_server.db.dialect import insert_for, one_of
from nexus_server.db.hot import HotReader, hot_sql
from nexus_server.db.types import UtcDateTime
from nexus_server.identity.tables import (
    known_devices,
    login_attempts,
    one_time_tokens,
    recovery_codes,
    sessions,
    users,
)


@dataclass(frozen=True)
class UserRow:
    id: str
    email: str
    password_hash: str
    display_name: str
    email_verified: bool
    status: str
    platform_admin: bool
    totp_secret: bytes | None
    totp_pending_secret: bytes | None
    totp_pending_expire_time: datetime | None
    totp_last_step: int | None
    create_time: datetime
    update_time: datetime
    last_login_time: datetime | None
    disable_time: datetime | None
    disable_reason: str


def new_user(
    *,
    email: str,
    password_hash: str,
    display_name: str,
    now: datetime,
    email_verified: bool = False,
    platform_admin: bool = False,
) -> UserRow:
    """A fresh active account: no second factor, never logged in, its id ordered by `now`."""
    return UserRow(
        id=new_id("usr", at=now),
        email=email,
        password_hash=password_hash,
        display_name=display_name,
        email_verified=email_verified,
        status="active",
        platform_admin=platform_admin,
        totp_secret=None,
        totp_pending_secret=None,
        totp_pending_expire_time=None,
        totp_last_step=None,
        create_time=now,
        update_time=now,
        last_login_time=None,
        disable_time=None,
        disable_reason="",
    )


@dataclass(frozen=True)
class SessionRow:
    id: str
    user_id: str
    tenant_id: str
    user_agent: str
    ip_address: str
    create_time: datetime
    last_seen_time: datetime
    expire_time: datetime
    end_time: datetime | None
    end_reason: str | None
    refresh_hash: str
    previous_refresh_hash: str | None
    rotate_time: datetime | None


@dataclass(frozen=True)
class Rotated:
    """What a refresh needs to know of the session it rotated."""

    user_id: str
    tenant_id: str
    platform_admin: bool


@dataclass(frozen=True)
class OneTimeRow:
    token_hash: str
    user_id: str
    purpose: str
    email: str
    create_time: datetime
    expire_time: datetime
    used_time: datetime | None


@dataclass(frozen=True)
class AttemptRow:
    key: str
    failures: int
    last_failure_time: datetime
    next_attempt_time: datetime
    locked_until: datetime | None


def _row(cls: type[Any], mapping: Any) -> Any:
    return cls(**{f.name: mapping[f.name] for f in fields(cls)})


# Users -----------------------------------------------------------------------------------


async def insert_user(session: AsyncSession, row: UserRow) -> bool:
    """Insert; False if the email is taken (the unique constraint decides, race-free)."""
    try:
        async with session.begin_nested():
            await session.execute(insert(users).values(**row.__dict__))
    except IntegrityError:
        return False
    return True


async def get_user(session: AsyncSession, user_id: str) -> UserRow | None:
    found = (await session.execute(select(users).where(users.c.id == user_id))).mappings().first()
    return _row(UserRow, found) if found else None


async def get_user_by_email(session: AsyncSession, email: str) -> UserRow | None:
    found = (await session.execute(select(users).where(users.c.email == email))).mappings().first()
    return _row(UserRow, found) if found else None


async def get_users(session: AsyncSession, user_ids: Sequence[str]) -> list[UserRow]:
    if not user_ids:
        return []
    query = select(users).where(one_of(session, users.c.id, sorted(set(user_ids))))
    return [_row(UserRow, m) for m in (await session.execute(query)).mappings()]


async def user_statuses(session: AsyncSession, user_ids: Sequence[str]) -> dict[str, str]:
    if not user_ids:
        return {}
    query = select(users.c.id, users.c.status).where(one_of(session, users.c.id, sorted(set(user_ids))))
    return {r.id: r.status for r in await session.execute(query)}


# The status read as PostgreSQL text for the hot reader (tenants' access cache re-reads the
# accounts asked about every 0.4 s): `%(ids)s` is one array of ids.
_STATUSES = select(users.c.id, users.c.status).where(users.c.id == any_(bindparam("ids")))
_STATUSES_SQL = hot_sql(_STATUSES)


async def read_user_statuses(hot: HotReader, user_ids: Sequence[str]) -> dict[str, str]:
    """`user_statuses` off the unit of work: one prepared statement, no transaction."""
    if not user_ids:
        return {}
    return {user_id: status for user_id, status in await hot.fetch(_STATUSES_SQL, {"ids": list(user_ids)})}


def ids_matching(text: str) -> Select[Any]:
    """The ids of accounts whose email or display name contains `text`, any case, as a
    subquery: a search of another capability's rows filters and pages in one statement."""
    needle = text.lower()
    return select(users.c.id).where(
        or_(
            users.c.email.contains(needle, autoescape=True),
            func.lower(users.c.display_name).contains(needle, autoescape=True),
        )
    )


async def update_user(session: AsyncSession, user_id: str, **values: Any) -> int:
    result = await session.execute(update(users).where(users.c.id == user_id).values(**values))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def record_login(session: AsyncSession, user_id: str, now: datetime) -> bool:
    """Stamp a sign-in if the user is still active. The UPDATE takes the user's row lock, so
    a concurrent DisableUser either runs first (and this fails) or sees the new session."""
    result = await session.execute(
        update(users).where(users.c.id == user_id, users.c.status == "active").values(last_login_time=now)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def list_users(
    session: AsyncSession, *, after_id: str, email_contains: str, status: str, limit: int
) -> list[UserRow]:
    query = select(users).where(users.c.id > after_id).order_by(users.c.id).limit(limit)
    if email_contains:
        escaped = email_contains.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(users.c.email.like(f"%{escaped}%", escape="\\"))
    if status:
        query = query.where(users.c.status == status)
    return [_row(UserRow, r) for r in (await session.execute(query)).mappings()]


async def count_users(session: AsyncSession) -> int:
    return int((await session.execute(select(func.count()).select_from(users))).scalar_one())


# Sessions and refresh tokens ------------------------------------------------------------------


async def insert_session(session: AsyncSession, row: SessionRow) -> None:
    await session.execute(insert(sessions).values(**row.__dict__))


async def get_session(session: AsyncSession, session_id: str) -> SessionRow | None:
    found = (await session.execute(select(sessions).where(sessions.c.id == session_id))).mappings().first()
    return _row(SessionRow, found) if found else None


async def active_sessions(
    session: AsyncSession, user_id: str, now: datetime, *, before_id: str = "", limit: int = 1000
) -> list[SessionRow]:
    query = (
        select(sessions)
        .where(sessions.c.user_id == user_id, sessions.c.end_time.is_(None), sessions.c.expire_time > now)
        .order_by(sessions.c.id.desc())
        .limit(limit)
    )
    if before_id:
        query = query.where(sessions.c.id < before_id)
    return [_row(SessionRow, r) for r in (await session.execute(query)).mappings()]


async def end_session(session: AsyncSession, session_id: str, now: datetime, reason: str) -> bool:
    """End the session if it is still open; True if this call ended it."""
    result = await session.execute(
        update(sessions)
        .where(sessions.c.id == session_id, sessions.c.end_time.is_(None))
        .values(end_time=now, end_reason=reason)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def set_session_tenant(session: AsyncSession, session_id: str, tenant_id: str) -> None:
    await session.execute(update(sessions).where(sessions.c.id == session_id).values(tenant_id=tenant_id))


_ROTATE = (
    update(sessions)
    .where(
        sessions.c.id == bindparam("session_id"),
        sessions.c.refresh_hash == bindparam("token_hash"),
        sessions.c.end_time.is_(None),
        sessions.c.expire_time > bindparam("now", type_=UtcDateTime()),
        exists().where(users.c.id == sessions.c.user_id, users.c.status == "active"),
    )
    .values(
        refresh_hash=bindparam("successor_hash"),
        previous_refresh_hash=sessions.c.refresh_hash,
        rotate_time=bindparam("now"),
        last_seen_time=bindparam("now"),
        expire_time=bindparam("new_expire_time"),
    )
    .returning(
        sessions.c.user_id,
        sessions.c.tenant_id,
        select(users.c.platform_admin).where(users.c.id == sessions.c.user_id).scalar_subquery(),
    )
)


async def rotate_refresh(
    session: AsyncSession,
    session_id: str,
    token_hash: str,
    successor_hash: str,
    *,
    now: datetime,
    expire_time: datetime,
) -> Rotated | None:
    """Spend the session's current refresh token for its successor, in one statement: only
    if `token_hash` is current and unexpired, the session open and its user active. The
    compare-and-set means exactly one of concurrent callers wins; None for the others."""
    found = (
        await session.execute(
            _ROTATE,
            {
                "session_id": session_id,
                "token_hash": token_hash,
                "successor_hash": successor_hash,
                "now": now,
                "new_expire_time": expire_time,
            },
        )
    ).first()
    return Rotated(found[0], found[1], bool(found[2])) if found is not None else None


# One-time tokens and recovery codes -------------------------------------------------------------


async def insert_one_time(session: AsyncSession, row: OneTimeRow) -> None:
    await session.execute(insert(one_time_tokens).values(**row.__dict__))


async def get_one_time(session: AsyncSession, token_hash: str) -> OneTimeRow | None:
    found = (
        (await session.execute(select(one_time_tokens).where(one_time_tokens.c.token_hash == token_hash)))
        .mappings()
        .first()
    )
    return _row(OneTimeRow, found) if found else None


async def latest_one_time(session: AsyncSession, user_id: str, purpose: str) -> OneTimeRow | None:
    found = (
        (
            await session.execute(
                select(one_time_tokens)
                .where(one_time_tokens.c.user_id == user_id, one_time_tokens.c.purpose == purpose)
                .order_by(one_time_tokens.c.create_time.desc())
                .limit(1)
            )
        )
        .mappings()
        .first()
    )
    return _row(OneTimeRow, found) if found else None


async def use_one_time(session: AsyncSession, token_hash: str, now: datetime) -> bool:
    result = await session.execute(
        update(one_time_tokens)
        .where(one_time_tokens.c.token_hash == token_hash, one_time_tokens.c.used_time.is_(None))
        .values(used_time=now)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def retire_one_time(session: AsyncSession, user_id: str, purpose: str, now: datetime) -> None:
    """Spend every unused token of this kind (a newer one replaces them)."""
    await session.execute(
        update(one_time_tokens)
        .where(
            one_time_tokens.c.user_id == user_id,
            one_time_tokens.c.purpose == purpose,
            one_time_tokens.c.used_time.is_(None),
        )
        .values(used_time=now)
    )


async def replace_recovery_codes(session: AsyncSession, user_id: str, code_hashes: list[str]) -> None:
    await session.execute(delete(recovery_codes).where(recovery_codes.c.user_id == user_id))
    if code_hashes:
        await session.execute(
            insert(recovery_codes), [{"user_id": user_id, "code_hash": h} for h in code_hashes]
        )


async def spend_recovery_code(session: AsyncSession, user_id: str, code_hash: str, now: datetime) -> bool:
    result = await session.execute(
        update(recovery_codes)
        .where(
            recovery_codes.c.user_id == user_id,
            recovery_codes.c.code_hash == code_hash,
            recovery_codes.c.used_time.is_(None),
        )
        .values(used_time=now)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


# Devices and sign-in failures -----------------------------------------------------------------


async def remember_device(session: AsyncSession, user_id: str, device_hash: str, now: datetime) -> bool:
    """Record the device; True if it was not known before. One statement (no savepoint):
    the primary key decides, race-free."""
    result = await session.execute(
        insert_for(session)(known_devices)
        .values(user_id=user_id, device_hash=device_hash, first_seen_time=now)
        .on_conflict_do_nothing()
        .returning(known_devices.c.user_id)
    )
    # RETURNING, not rowcount: psycopg's rowcount is not 0 for a skipped conflicting row.
    return result.scalar_one_or_none() is not None


async def knows_device(session: AsyncSession, user_id: str, device_hash: str) -> bool:
    """Whether the user has signed in from this device before (any user id, even "", costs
    the same one lookup, so the answer's timing says nothing about the account)."""
    found = await session.execute(
        select(known_devices.c.user_id).where(
            known_devices.c.user_id == user_id, known_devices.c.device_hash == device_hash
        )
    )
    return found.first() is not None


async def get_attempts(session: AsyncSession, key: str) -> AttemptRow | None:
    found = (
        (await session.execute(select(login_attempts).where(login_attempts.c.key == key))).mappings().first()
    )
    return _row(AttemptRow, found) if found else None


async def create_attempts(session: AsyncSession, key: str, now: datetime) -> None:
    """Create the zero row if missing (a concurrent creator wins harmlessly)."""
    await session.execute(
        insert_for(session)(login_attempts)
        .values(key=key, failures=0, last_failure_time=now, next_attempt_time=now, locked_until=None)
        .on_conflict_do_nothing()
    )


async def reset_attempts(session: AsyncSession, key: str, now: datetime) -> None:
    """Back to zero, keeping the row: the next attempt needs no INSERT."""
    await session.execute(
        update(login_attempts)
        .where(login_attempts.c.key == key)
        .values(failures=0, last_failure_time=now, next_attempt_time=now, locked_until=None)
    )


async def swap_attempts(
    session: AsyncSession,
    key: str,
    *,
    expected_failures: int,
    failures: int,
    now: datetime,
    next_attempt_time: datetime,
    locked_until: datetime | None,
) -> bool:
    """Compare-and-set the counter: True only for the one caller that saw `expected_failures`."""
    result = await session.execute(
        update(login_attempts)
        .where(login_attempts.c.key == key, login_attempts.c.failures == expected_failures)
        .values(
            failures=failures,
            last_failure_time=now,
            next_attempt_time=next_attempt_time,
            locked_until=locked_until,
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def add_attempts(session: AsyncSession, key: str, delta: int, now: datetime) -> int:
    """Atomically add `delta` (never below zero); returns the new count."""
    result = await session.execute(
        update(login_attempts)
        .where(login_attempts.c.key == key)
        .values(
            failures=case(
                (login_attempts.c.failures + delta < 0, 0), else_=login_attempts.c.failures + delta
            ),
            last_failure_time=now,
        )
        .returning(login_attempts.c.failures)
    )
    value = result.scalar_one_or_none()
    return int(value or 0)


async def clear_attempts(session: AsyncSession, key: str) -> None:
    await session.execute(delete(login_attempts).where(login_attempts.c.key == key))


async def clear_attempts_with_prefix(session: AsyncSession, prefix: str) -> None:
    """Delete every counter whose key starts with `prefix` (hex and punctuation only, so
    nothing in it is a LIKE wildcard)."""
    matching = login_attempts.c.key.startswith(prefix, autoescape=True)
    await session.execute(delete(login_attempts).where(matching))
