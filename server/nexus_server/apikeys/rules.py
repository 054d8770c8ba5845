"""What a valid key record is: scopes, names, limits, expiry, lifecycle state.

Plain functions on plain values (no grpc, no SQL); each refusal names the request field.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

from nexus_server.auth.principal import Principal
from nexus_server.common.errors import PermissionDenied
from nexus_server.common.text import HIDDEN_WHY, has_control
from nexus_server.common.validation import Violations

if TYPE_CHECKING:  # the row's type only: rules import no SQL (the architecture contract)
    from nexus_server.apikeys.store import ApiKeyRow

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

# What a caller may put on a key: the scopes of the API key that calls, or ANY_SCOPE for a
# person, whom the caller table has already required to be a tenant admin or owner.
Grantor = frozenset[str] | None
ANY_SCOPE: Grantor = None


def grantor_of(principal: Principal | None) -> Grantor:
    """What a caller may give a key: a person passed the caller table as a tenant admin and
    may give any scope; an API key only the scopes it holds."""
    if principal is not None and principal.is_user:
        return ANY_SCOPE
    return principal.scopes if principal is not None else frozenset()


def clean_name(name: str, field: str, bad: Violations) -> str:
    name = name.strip()
    if not name:
        bad.add(field, "must not be empty")
    elif len(name) > MAX_NAME:
        bad.add(field, f"must be at most {MAX_NAME} characters")
    elif has_control(name):
        # As tenant names: a key's name is shown in the console and in events, where a
        # bidirectional override or a zero-width character would make it pass for another.
        bad.add(field, HIDDEN_WHY)
    return name


def clean_scopes(scopes: Iterable[str], field: str, bad: Violations) -> tuple[str, ...]:
    given = list(scopes)
    if not given:
        bad.add(field, "must hold at least one scope")
        return ()
    if len(given) > MAX_SCOPES:
        bad.add(field, f"must hold at most {MAX_SCOPES} entries")
        return ()
    for index, scope in enumerate(given):
        if scope not in SCOPES:
            bad.add(f"{field}[{index}]", f"unknown scope; expected one of {', '.join(sorted(SCOPES))}")
    return tuple(sorted(set(given)))


def clean_rate_limit(value: int, field: str, bad: Violations) -> int:
    if value == 0:
        return DEFAULT_RATE_LIMIT
    if not 1 <= value <= MAX_RATE_LIMIT:
        bad.add(field, f"must be from 1 to {MAX_RATE_LIMIT} (0 means the default {DEFAULT_RATE_LIMIT})")
    return value


def check_expiry(expire_time: datetime | None, now: datetime, field: str, bad: Violations) -> None:
    if expire_time is not None and expire_time <= now:
        bad.add(field, "must be in the future")


def check_environment(environment: str, field: str, bad: Violations) -> None:
    if environment not in ENVIRONMENTS:
        bad.add(field, "must be ENVIRONMENT_TEST or ENVIRONMENT_LIVE")


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


def not_grantable(requested: Iterable[str], held: Grantor) -> tuple[str, ...]:
    """The scopes of `requested` that a caller holding `held` may not put on a key, sorted.

    A key gives only what it holds, or `apikeys:write` alone would mint a key with `*`.
    Holding `*` gives everything; `*` itself (every scope, including scopes added later) only
    a key holding `*` may give, however many named scopes the caller holds.
    """
    if held is None or "*" in held:
        return ()
    return tuple(sorted(set(requested) - held))


def check_grantable(requested: Iterable[str], held: Grantor, action: Literal["grant", "rotate"]) -> None:
    """Refuse with PERMISSION_DENIED SCOPE_NOT_GRANTABLE unless `held` may give `requested`.

    Rotating counts as granting: the new secret is handed to the caller and carries the
    rotated key's scopes."""
    missing = not_grantable(requested, held)
    if not missing:
        return
    what = (
        "an API key may grant only scopes it holds itself"
        if action == "grant"
        else "an API key may rotate only keys whose scopes it holds itself (the new secret carries them)"
    )
    raise PermissionDenied(
        f"{what}; the calling key does not hold {', '.join(missing)}",
        reason="SCOPE_NOT_GRANTABLE",
        metadata={"scopes": ",".join(missing)},
    )
