"""The signals that make every replica's directory forget a cached answer about a tenant.

They travel through the revocation feed in the writing transaction, so a replica can never
see the change without the signal or the signal without the change. `until=now` makes each an
invalidation, not a standing block.
"""

from __future__ import annotations

from nexus_server.auth.revocations import Revocations
from nexus_server.db.uow import UnitOfWork
from nexus_server.tenants.directory import MEMBERSHIP, TENANT


async def invalidate_tenant(uow: UnitOfWork, revocations: Revocations, tenant_id: str) -> None:
    """The tenant's status, plan or domain changed."""
    await revocations.revoke(uow, TENANT, tenant_id, until=uow.clock.now())


async def invalidate_member(uow: UnitOfWork, revocations: Revocations, tenant_id: str, user_id: str) -> None:
    """One person's roles or grants in the tenant changed."""
    await revocations.revoke(uow, MEMBERSHIP, f"{tenant_id}/{user_id}", until=uow.clock.now())


async def invalidate_all_members(uow: UnitOfWork, revocations: Revocations, tenant_id: str) -> None:
    """What a role or group grants changed, so anyone in the tenant may hold different rights."""
    await revocations.revoke(uow, MEMBERSHIP, f"{tenant_id}/*", until=uow.clock.now())
