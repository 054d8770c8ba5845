"""The rows the tenant store reads and writes (frozen dataclasses), and what its modules
share: `Conflict` for a unique rule a concurrent writer broke, `guarded` writes, keyset
paging (`after_key`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Executable, and_, or_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession


class Conflict(Exception):
    """A unique rule was broken by a concurrent writer between check and write."""


async def guarded(session: AsyncSession, statement: Executable) -> None:
    # A savepoint, so a unique violation from a concurrent writer leaves the transaction usable
    # and surfaces as a Conflict the workflow can name (SLUG_TAKEN, …) instead of INTERNAL.
    try:
        async with session.begin_nested():
            await session.execute(statement)
    except IntegrityError:
        raise Conflict from None


@dataclass(frozen=True)
class TenantRow:
    id: str
    slug: str
    display_name: str
    domain: str | None
    status: str
    suspension_cause: str | None
    plan_id: str
    create_time: datetime
    update_time: datetime
    delete_time: datetime | None
    suspend_reason: str | None = None
    suspend_time: datetime | None = None
    domain_token: str | None = None
    domain_verify_time: datetime | None = None


@dataclass(frozen=True)
class MembershipRow:
    tenant_id: str
    user_id: str
    roles: tuple[str, ...]
    create_time: datetime
    update_time: datetime | None = None
    added_by: str | None = None


@dataclass(frozen=True)
class RoleRow:
    id: str
    tenant_id: str
    name: str
    description: str
    permissions: tuple[str, ...]
    create_time: datetime
    update_time: datetime


@dataclass(frozen=True)
class GroupRow:
    id: str
    tenant_id: str
    name: str
    description: str
    roles: tuple[str, ...]
    create_time: datetime
    update_time: datetime
    member_user_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class GrantRow:
    tenant_id: str
    user_id: str
    project: str
    role: str
    granted_by: str | None
    grant_time: datetime


@dataclass(frozen=True)
class InvitationRow:
    id: str
    tenant_id: str
    email: str
    roles: tuple[str, ...]
    token_hash: str
    state: str
    invited_by: str | None
    accepted_by: str | None
    create_time: datetime
    send_time: datetime
    expire_time: datetime
    accept_time: datetime | None
    revoke_time: datetime | None


def after_key(columns: Sequence[ColumnElement[Any]], key: Sequence[Any]) -> ColumnElement[bool]:
    """Rows strictly after `key` in the order of `columns` (keyset paging)."""
    first, *rest = columns
    if not rest:
        last: ColumnElement[bool] = first > key[0]
        return last
    return or_(first > key[0], and_(first == key[0], after_key(rest, key[1:])))
