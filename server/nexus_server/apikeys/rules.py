"""What a valid key record is: scopes, names, limits, expiry, lifecycle state.

Plain functions on plain values (no grpc, no SQL); each refusal names the request field.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from datetime import datetime, timedelta

from nexus_server.apikeys.store import ApiKeyRow
from nexus_server.common.errors import FieldViolation

SCOPES = frozenset(
    {
        "auth:introspect",
        "apikeys:read",
        "apikeys:write",
        "tenants:read",
        "tenants:write",
        "billing:read",
        "billing:write",
        "credits:consume",
        "usage:read",
        "usage:write",
        "events:publish",
        "events:subscribe",
        "*",
    }
)
ENVIRONMENTS = ("test", "live")
DEFAULT_RATE_LIMIT = 100
MAX_RATE_LIMIT = 100_000
MAX_NAME = 100
MAX_SCOPES = 64  # more than there are scopes; bounds the work on hostile input
MAX_GRACE = timedelta(days=7)

ACTIVE, EXPIRED, REVOKED = "active", "expired", "revoked"


def clean_name(name: str, field: str, out: list[FieldViolation]) -> str:
    name = name.strip()
    if not name:
        out.append(FieldViolation(field, "must not be empty"))
    elif len(name) > MAX_NAME:
        out.append(FieldViolation(field, f"must be at most {MAX_NAME} characters"))
    elif any(unicodedata.category(c) in ("Cc", "Cs") for c in name):
        out.append(FieldViolation(field, "must not contain control characters"))
    return name


def clean_scopes(scopes: Iterable[str], field: str, out: list[FieldViolation]) -> tuple[str, ...]:
    given = list(scopes)
    if not given:
        out.append(FieldViolation(field, "must hold at least one scope"))
        return ()
    if len(given) > MAX_SCOPES:
        out.append(FieldViolation(field, f"must hold at most {MAX_SCOPES} entries"))
        return ()
    for index, scope in enumerate(given):
        if scope not in SCOPES:
            out.append(
                FieldViolation(
                    f"{field}[{index}]", f"unknown scope; expected one of {', '.join(sorted(SCOPES))}"
                )
            )
    return tuple(sorted(set(given)))


def clean_rate_limit(value: int, field: str, out: list[FieldViolation]) -> int:
    if value == 0:
        return DEFAULT_RATE_LIMIT
    if not 1 <= value <= MAX_RATE_LIMIT:
        out.append(
            FieldViolation(
                field, f"must be from 1 to {MAX_RATE_LIMIT} (0 means the default {DEFAULT_RATE_LIMIT})"
            )
        )
    return value


def check_expiry(expire_time: datetime | None, now: datetime, field: str, out: list[FieldViolation]) -> None:
    if expire_time is not None and expire_time <= now:
        out.append(FieldViolation(field, "must be in the future"))


def check_environment(environment: str, field: str, out: list[FieldViolation]) -> None:
    if environment not in ENVIRONMENTS:
        out.append(FieldViolation(field, "must be ENVIRONMENT_TEST or ENVIRONMENT_LIVE"))


def state_of(row: ApiKeyRow, now: datetime) -> str:
    if row.revoke_time is not None:
        return REVOKED
    if row.expire_time is not None and row.expire_time <= now:
        return EXPIRED
    return ACTIVE


def previous_secret_live(row: ApiKeyRow, now: datetime) -> bool:
    """Whether the previous secret of a rotation still authenticates (its grace runs)."""
    return (
        row.previous_secret_hash is not None
        and row.previous_secret_expire_time is not None
        and row.previous_secret_expire_time > now
        and row.revoke_time is None
    )


def holds(scopes: Iterable[str], required: str) -> bool:
    held = set(scopes)
    return "*" in held or required in held
