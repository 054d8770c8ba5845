"""The TenantDirectory the authentication layer asks on every tenant-scoped call.

Memberships and statuses come from the AccessCache (cache.py), which every change that
matters (membership, role, group, status) invalidates through the revocation feed: a
removed member or a suspended tenant is refused on every replica within 1 s. Custom
domains are kept a few seconds at most, in a bounded map (any Host header can be asked
about), and forgotten as soon as a tenant's domain or status changes.
"""

from __future__ import annotations

import time

from nexus_server.auth.principal import Membership, TenantStatus
from nexus_server.auth.revocations import Revocations
from nexus_server.common.ids import is_id
from nexus_server.db.uow import Database
from nexus_server.tenants import store
from nexus_server.tenants.cache import MEMBERSHIP, TENANT, AccessCache, Entry, Lru

__all__ = ["MEMBERSHIP", "TENANT", "CachedTenantDirectory"]

# Stored text → TenantStatus; calling the Enum to look a value up costs more than the cache.
_STATUSES = {status.value: status for status in TenantStatus}


class CachedTenantDirectory:
    def __init__(
        self,
        db: Database,
        revocations: Revocations,
        *,
        cache: AccessCache,
        ttl: float = 5.0,
        max_domains: int = 10_000,
    ):
        self.db = db
        self.ttl = ttl
        self.cache = cache  # shared with CheckPermission
        self._domains: Lru[str, str | None] = Lru(max_domains)
        revocations.on_revoke(self._invalidate)

    def _invalidate(self, kind: str, subject: str) -> None:
        if kind == TENANT:
            self._domains.clear()

    async def membership(self, user_id: str, tenant_id: str) -> Membership | None:
        if not is_id(tenant_id, "ten"):
            return None  # a malformed name is no tenant (and never reaches SQL)
        facts = await self.cache.member(tenant_id, user_id)
        return facts.membership if facts is not None else None

    async def status(self, tenant_id: str) -> TenantStatus | None:
        if not is_id(tenant_id, "ten"):
            return None
        status = await self.cache.tenant_status(tenant_id)
        return _STATUSES.get(status) if status is not None else None

    async def tenant_for_domain(self, host: str) -> str | None:
        if len(host) > 253 or not (host.isascii() and host.isprintable()):
            return None
        now = time.monotonic()
        cached = self._domains.get(host)
        if cached is not None and now - cached.as_of < self.ttl:
            return cached.value
        async with self.db.unit_of_work(readonly=True) as uow:
            row = await store.tenant_by_domain(uow.session, host)
        result = row.id if row is not None else None
        self._domains.put(host, Entry(result, now))
        return result
