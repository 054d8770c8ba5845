"""What the identity workflows are built from, assembled once by wiring.build."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from nexus_server.auth.ports import TenantDirectory
from nexus_server.auth.revocations import Revocations
from nexus_server.common.sealing import Sealer
from nexus_server.config import Settings
from nexus_server.db.uow import Database, UnitOfWork
from nexus_server.identity.keys import KeyRing
from nexus_server.identity.mail import Mailer
from nexus_server.identity.passwords import Hasher
from nexus_server.identity.reset_requests import ResetRequests
from nexus_server.identity.throttle import Throttle
from nexus_server.identity.tokens import AccessTokens

# (uow, tenant_id, user_id) -> project name → role; provided by the tenants capability.
ProjectGrants = Callable[[UnitOfWork, str, str], Coroutine[Any, Any, dict[str, str]]]


class TenantStanding(Protocol):
    @property
    def tenant_id(self) -> str: ...

    @property
    def status(self) -> str: ...  # active | suspended | deleted

    @property
    def roles(self) -> tuple[str, ...] | None: ...  # None: not a member


class TenantStandings(Protocol):
    """What identity needs of tenancy to pick a session's tenant (tenants/ports.py)."""

    async def standing_in(self, uow: UnitOfWork, tenant_id: str, user_id: str) -> TenantStanding | None: ...

    async def sole_tenant(self, uow: UnitOfWork, user_id: str) -> TenantStanding | None: ...


@dataclass
class Identity:
    settings: Settings
    db: Database
    revocations: Revocations
    hasher: Hasher
    keys: KeyRing
    tokens: AccessTokens
    throttle: Throttle
    mailer: Mailer
    reset_requests: ResetRequests
    totp_sealer: Sealer
    refresh_key: bytes  # keys the derivation of a refresh token's successor
    tenants: Callable[[], TenantDirectory | None]
    project_grants: ProjectGrants | None = None
    standings: TenantStandings | None = None  # set by app/wiring.py once tenants are built


@dataclass(frozen=True)
class Client:
    """Who is at the other end of a sign-in, as the transport saw it."""

    user_agent: str = ""
    ip_address: str = ""
