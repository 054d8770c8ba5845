"""What tenants need of identity's accounts (identity/ports.py `People`, handed over by
app/wiring.py): members' emails and names, lookup by email for invitations, account status
for CheckPermission, and the ids a member search matches."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from sqlalchemy import Select

from nexus_server.db.uow import Database, UnitOfWork


class Person(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def email(self) -> str: ...
    @property
    def display_name(self) -> str: ...
    @property
    def status(self) -> str: ...


class People(Protocol):
    async def by_id(self, uow: UnitOfWork, user_id: str) -> Person | None: ...
    async def by_email(self, uow: UnitOfWork, email: str) -> Person | None: ...
    async def by_ids(self, uow: UnitOfWork, user_ids: Sequence[str]) -> Mapping[str, Person]: ...
    async def statuses(self, db: Database, user_ids: Sequence[str]) -> dict[str, str]: ...
    def ids_matching(self, text: str) -> Select[Any]: ...
