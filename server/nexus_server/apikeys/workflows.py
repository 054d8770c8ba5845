"""API-key workflows on a unit of work: issue, list, get, update, rotate, revoke, expire.

Each change publishes its event in the same transaction (outbox) and, when it could make a
cached verification wrong (revoke, rotate, narrower update), writes to the revocation feed
so every replica drops the cached key within a poll interval.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from nexus_server.apikeys import key_format, rules, store
from nexus_server.apikeys.store import ApiKeyRow
from nexus_server.auth.revocations import Revocations
from nexus_server.common import pagination
from nexus_server.common.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PreconditionViolation,
)
from nexus_server.common.validation import Violations
from nexus_server.db.uow import UnitOfWork

FEED_KIND = "apikey"  # revocation-feed kind; subject is the key id


def _event_data(row: ApiKeyRow) -> dict[str, Any]:
    # Never the secret, its digest or its start: events fan out to webhooks.
    return {
        "api_key_id": row.id,
        "name": row.name,
        "scopes": list(row.scopes),
        "environment": row.environment,
    }


async def issue_key(
    uow: UnitOfWork,
    *,
    tenant_id: str,
    name: str,
    scopes: list[str] | tuple[str, ...],
    environment: str = "test",
    rate_limit_per_minute: int = rules.DEFAULT_RATE_LIMIT,
    expire_time: datetime | None = None,
    created_by: str = "",
    grantor: rules.Grantor = rules.ANY_SCOPE,
) -> tuple[ApiKeyRow, str]:
    """Create a key; returns its record and the full key, which exists only in this answer.
    `grantor` is what the caller may give (rules.check_grantable); ANY_SCOPE for a person or
    an operator at the command line."""
    now = uow.clock.now()
    with Violations() as bad:
        name = rules.clean_name(name, "api_key.name", bad)
        clean_scopes = rules.clean_scopes(scopes, "api_key.scopes", bad)
        rules.check_environment(environment, "api_key.environment", bad)
        rate = rules.clean_rate_limit(rate_limit_per_minute, "api_key.rate_limit_per_minute", bad)
        rules.check_expiry(expire_time, now, "api_key.expire_time", bad)
    rules.check_grantable(clean_scopes, grantor, "grant")
    key_id = key_format.new_key_id(int(now.timestamp() * 1000))
    full_key = key_format.new_full_key(key_id)
    row = ApiKeyRow(
        id=key_id,
        tenant_id=tenant_id,
        name=name,
        scopes=clean_scopes,
        environment=environment,
        rate_limit_per_minute=rate,
        start=key_format.start_of(full_key),
        secret_hash=key_format.digest(full_key),
        previous_secret_hash=None,
        previous_secret_expire_time=None,
        created_by=created_by,
        create_time=now,
        update_time=now,
        expire_time=expire_time,
        last_used_time=None,
        revoke_time=None,
        rotate_time=None,
    )
    await store.insert_key(uow.session, row)
    await uow.append_event("apikey.created", _event_data(row), tenant_id=tenant_id, subject=key_id)
    return row, full_key


def _check_id(key_id: str, field: str = "id") -> None:
    if not key_format.is_key_id(key_id):
        raise InvalidArgument(FieldViolation(field, "must be `eco_api_` followed by 22 base62 characters"))


async def _find(
    uow: UnitOfWork, tenant_id: str, key_id: str, *, field: str = "id", lock: bool = False
) -> ApiKeyRow:
    _check_id(key_id, field)
    row = await store.get_key(uow.session, key_id, tenant_id=tenant_id, for_update=lock)
    if row is None:
        raise NotFound(f"API key {key_id} does not exist")
    return row


def _require_active(row: ApiKeyRow, now: datetime) -> None:
    state = rules.state_of(row, now)
    if state == rules.ACTIVE:
        return
    reason = "API_KEY_REVOKED" if state == rules.REVOKED else "API_KEY_EXPIRED"
    raise FailedPrecondition(
        f"API key {row.id} is {state}, which is final",
        reason=reason,
        violations=[PreconditionViolation("STATE", row.id, f"the key is {state}")],
        metadata={"api_key_id": row.id},
    )


async def get_key(uow: UnitOfWork, tenant_id: str, key_id: str) -> ApiKeyRow:
    return await _find(uow, tenant_id, key_id)


@dataclass(frozen=True)
class ListQuery:
    tenant_id: str
    page_size: int = 0
    page_token: str = ""
    environment: str | None = None  # None: any
    state: str | None = None  # None: active and expired (+ revoked if show_revoked)
    show_revoked: bool = False


async def list_keys(uow: UnitOfWork, query: ListQuery) -> tuple[list[ApiKeyRow], str]:
    with Violations() as bad:
        size = pagination.page_size(query.page_size, bad)
    if query.state is not None:
        states = frozenset({query.state})
    elif query.show_revoked:
        states = frozenset({rules.ACTIVE, rules.EXPIRED, rules.REVOKED})
    else:
        states = frozenset({rules.ACTIVE, rules.EXPIRED})
    filters = f"{query.tenant_id}|{query.environment}|{sorted(states)}"
    after = pagination.decode(query.page_token, "ListApiKeys", filters, (datetime, str))
    where = store.ListFilter(query.tenant_id, query.environment, states, uow.clock.now())
    rows = await store.list_keys(uow.session, where, after=after, limit=size + 1)
    return pagination.page(rows, size, "ListApiKeys", filters, lambda r: [r.create_time, r.id])


_UNSET: Any = object()


@dataclass(frozen=True)
class KeyUpdate:
    """The fields to change; a field left as UNSET is not touched. `expire_time=None` clears."""

    name: Any = _UNSET
    scopes: Any = _UNSET
    rate_limit_per_minute: Any = _UNSET
    expire_time: Any = _UNSET


UPDATABLE = ("name", "scopes", "rate_limit_per_minute", "expire_time")


async def update_key(
    uow: UnitOfWork,
    revocations: Revocations,
    tenant_id: str,
    key_id: str,
    change: KeyUpdate,
    *,
    grantor: rules.Grantor = rules.ANY_SCOPE,
) -> ApiKeyRow:
    """Change the fields `change` sets. New scopes must all be the grantor's to give, on any
    key, the calling key itself included."""
    _check_id(key_id, "api_key.id")
    now = uow.clock.now()
    values: dict[str, Any] = {}
    with Violations() as bad:
        if change.name is not _UNSET:
            values["name"] = rules.clean_name(change.name, "api_key.name", bad)
        if change.scopes is not _UNSET:
            values["scopes"] = rules.clean_scopes(change.scopes, "api_key.scopes", bad)
        if change.rate_limit_per_minute is not _UNSET:
            values["rate_limit_per_minute"] = rules.clean_rate_limit(
                change.rate_limit_per_minute, "api_key.rate_limit_per_minute", bad
            )
        if change.expire_time is not _UNSET:
            rules.check_expiry(change.expire_time, now, "api_key.expire_time", bad)
            values["expire_time"] = change.expire_time
    if "scopes" in values:
        rules.check_grantable(values["scopes"], grantor, "grant")
    row = await _find(uow, tenant_id, key_id, field="api_key.id", lock=True)
    _require_active(row, now)
    if not values:
        return row
    values["update_time"] = now
    if "expire_time" in values and row.previous_secret_expire_time is not None:
        # The previous secret never outlives the key.
        expiry = values["expire_time"]
        if expiry is not None and expiry < row.previous_secret_expire_time:
            values["previous_secret_expire_time"] = expiry
    await store.update_key(uow.session, key_id, **values)
    await revocations.revoke(uow, FEED_KIND, key_id, until=now)
    return replace(row, **values)


async def rotate_key(
    uow: UnitOfWork,
    revocations: Revocations,
    tenant_id: str,
    key_id: str,
    grace: timedelta,
    *,
    grantor: rules.Grantor = rules.ANY_SCOPE,
) -> tuple[ApiKeyRow, str]:
    """Give the key a new secret, returned once. The caller learns a working secret of the
    key, so it must be able to grant every scope the key holds."""
    if grace < timedelta(0) or grace > rules.MAX_GRACE:
        _check_id(key_id)
        raise InvalidArgument(FieldViolation("grace_period", "must be from 0 to 7 days"))
    now = uow.clock.now()
    row = await _find(uow, tenant_id, key_id, lock=True)
    _require_active(row, now)
    rules.check_grantable(row.scopes, grantor, "rotate")
    full_key = key_format.new_full_key(key_id)
    previous_hash: str | None = None
    previous_until: datetime | None = None
    if grace > timedelta(0):
        previous_hash = row.secret_hash
        previous_until = now + grace
        if row.expire_time is not None:
            previous_until = min(previous_until, row.expire_time)
    values: dict[str, Any] = {
        "secret_hash": key_format.digest(full_key),
        "start": key_format.start_of(full_key),
        "previous_secret_hash": previous_hash,
        "previous_secret_expire_time": previous_until,
        "rotate_time": now,
        "update_time": now,
    }
    await store.update_key(uow.session, key_id, **values)
    await revocations.revoke(uow, FEED_KIND, key_id, until=now)
    rotated = replace(row, **values)
    data = _event_data(rotated)
    data["previous_secret_expire_time"] = previous_until.isoformat() if previous_until else None
    await uow.append_event("apikey.rotated", data, tenant_id=tenant_id, subject=key_id)
    return rotated, full_key


async def revoke_key(uow: UnitOfWork, revocations: Revocations, tenant_id: str, key_id: str) -> ApiKeyRow:
    """Idempotent: a revoked key is returned as it is, with no second event."""
    now = uow.clock.now()
    row = await _find(uow, tenant_id, key_id, lock=True)
    if row.revoke_time is not None:
        return row
    values: dict[str, Any] = {
        "revoke_time": now,
        "update_time": now,
        "previous_secret_hash": None,
        "previous_secret_expire_time": None,
    }
    await store.update_key(uow.session, key_id, **values)
    # A permanent entry: replicas refuse the key from the feed alone, whatever they cached.
    await revocations.revoke(uow, FEED_KIND, key_id)
    revoked = replace(row, **values)
    await uow.append_event("apikey.revoked", _event_data(revoked), tenant_id=tenant_id, subject=key_id)
    return revoked


async def revoke_tenant_keys(uow: UnitOfWork, revocations: Revocations, tenant_id: str) -> int:
    """Revoke every unrevoked key of a tenant (tenant deletion); returns how many."""
    count = 0
    while True:
        where = store.ListFilter(tenant_id, None, frozenset({rules.ACTIVE, rules.EXPIRED}), uow.clock.now())
        rows = await store.list_keys(uow.session, where, after=None, limit=500)
        for row in rows:
            await revoke_key(uow, revocations, tenant_id, row.id)
        count += len(rows)
        if len(rows) < 500:
            return count


async def publish_expired(uow: UnitOfWork, *, limit: int = 200) -> int:
    """Publish `apikey.expired` once for each key whose expiry has passed; returns how many.
    Expiry itself needs no write: verification compares `expire_time` with the clock."""
    now = uow.clock.now()
    rows = await store.newly_expired(uow.session, now, limit)
    for row in rows:
        await store.update_key(uow.session, row.id, expired_event_time=now)
        data = _event_data(row)
        data["expire_time"] = row.expire_time.isoformat() if row.expire_time else None
        await uow.append_event("apikey.expired", data, tenant_id=row.tenant_id, subject=row.id)
    return len(rows)
