"""What the authentication layer needs from capabilities, as protocols.

The identity capability provides the TokenVerifier, API keys the KeyVerifier, tenants the
TenantDirectory; each registers its implementation on the AppContext when it is built.
Until one is registered, credentials of that kind cannot be verified and are refused.
"""

from __future__ import annotations

from typing import Protocol

from nexus_server.auth.principal import Membership, Principal, TenantStatus


class TokenVerifier(Protocol):
    async def verify_access_token(self, token: str) -> Principal:
        """The principal of a valid, unrevoked access token; raises Unauthenticated otherwise."""
        ...


class KeyVerifier(Protocol):
    async def verify_api_key(self, key: str) -> Principal:
        """The principal of a valid, unrevoked, unexpired API key; raises Unauthenticated
        (CREDENTIALS_INVALID) otherwise. Rate limiting is not its concern."""
        ...


class TenantDirectory(Protocol):
    async def membership(self, user_id: str, tenant_id: str) -> Membership | None:
        """The person's membership of the tenant, or None if they are not a member."""
        ...

    async def status(self, tenant_id: str) -> TenantStatus | None:
        """The tenant's status, or None if no such tenant exists."""
        ...

    async def tenant_for_domain(self, host: str) -> str | None:
        """The id of the tenant whose custom domain is `host` (already normalised), if any."""
        ...
