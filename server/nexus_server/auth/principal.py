"""The authenticated caller of one request."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum


class PrincipalKind(Enum):
    USER = "user"
    API_KEY = "api_key"


@dataclass(frozen=True)
class Principal:
    """A person (access token) or a program (API key), as verified for this request."""

    kind: PrincipalKind
    subject: str  # usr_… for people, eco_api_… for keys
    tenant_id: str = ""  # the tenant the credential is bound to: token `tid`, or the key's tenant
    roles: frozenset[str] = frozenset()  # the person's roles in `tenant_id` (from the token)
    scopes: frozenset[str] = frozenset()  # the key's scopes; "*" holds all
    platform_admin: bool = False
    session_id: str = ""
    token_id: str = ""
    expires_at: datetime | None = None
    projects: Mapping[str, str] = field(default_factory=dict)  # project → role (token claim)

    @property
    def is_user(self) -> bool:
        return self.kind is PrincipalKind.USER

    @property
    def user_id(self) -> str:
        return self.subject if self.kind is PrincipalKind.USER else ""

    @property
    def key_id(self) -> str:
        return self.subject if self.kind is PrincipalKind.API_KEY else ""

    def has_scope(self, scope: str) -> bool:
        return "*" in self.scopes or scope in self.scopes


@dataclass(frozen=True)
class Membership:
    """A person's standing in one tenant: built-in and custom role names, and the union of
    permissions those roles and the person's groups grant."""

    tenant_id: str
    user_id: str
    roles: frozenset[str]
    permissions: frozenset[str] = frozenset()


class TenantStatus(Enum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    DELETED = "deleted"
