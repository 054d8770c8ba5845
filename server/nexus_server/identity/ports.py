"""What the identity capability offers the others: a directory of people (tenants show
members' emails and names, invite by email, and follow account status through it), handed
over by app/wiring.py. It shows no secret: no password hash, no TOTP seed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select

from nexus_server.db.uow import Database, UnitOfWork
from nexus_server.identity import store


@dataclass(frozen=True)
class Person:
    id: str
    email: str
    display_name: str
    status: str  # active | disabled
    email_verified: bool


def _person(row: store.UserRow) -> Person:
    return Person(row.id, row.email, row.display_name, row.status, row.email_verified)


class People:
    """Accounts as other capabilities may see them."""

    async def by_id(self, uow: UnitOfWork, user_id: str) -> Person | None:
        row = await store.get_user(uow.session, user_id)
        return _person(row) if row is not None else None

    async def by_email(self, uow: UnitOfWork, email: str) -> Person | None:
        row = await store.get_user_by_email(uow.session, email)
        return _person(row) if row is not None else None

    async def by_ids(self, uow: UnitOfWork, user_ids: Sequence[str]) -> dict[str, Person]:
        return {r.id: _person(r) for r in await store.get_users(uow.session, user_ids)}

    async def statuses(self, db: Database, user_ids: Sequence[str]) -> dict[str, str]:
        """`{user_id: status}` of the accounts that exist among `user_ids`, as one read of its
        own: off the unit of work where the database has a hot reader (PostgreSQL), so the
        access cache, which re-reads them every 0.4 s, costs one statement."""
        if db.hot is not None:
            return await store.read_user_statuses(db.hot, user_ids)
        async with db.unit_of_work(readonly=True) as uow:
            return await store.user_statuses(uow.session, user_ids)

    def ids_matching(self, text: str) -> Select[Any]:
        """A subquery of the ids of accounts whose email or name contains `text` (any case):
        the database is shared, so a member search filters and pages in one statement
        instead of fetching every matching id first."""
        return store.ids_matching(text)
