"""One writer at a time per tenant.

Tenant workflows check, then write: a person is not yet in the group, a grant differs, a
name is free, an invitation is still pending, the group has room, another owner remains.
Under PostgreSQL's READ COMMITTED two concurrent calls both pass the check and the second
write breaks a unique rule (INTERNAL) or an invariant (two pending invitations, no owner
left). Each writing workflow therefore first locks the tenant's row (SELECT … FOR UPDATE):
the second call waits, then re-reads committed state and answers as the contract says
(idempotent success, ALREADY_EXISTS). SQLite serialises writers already; the lock is a
no-op there. Tenant-level writes are admin actions, rare enough that one lock costs nothing.
"""

from __future__ import annotations

from nexus_server.common.errors import NotFound
from nexus_server.db.uow import UnitOfWork
from nexus_server.tenants import store


async def lock_tenant(uow: UnitOfWork, tenant_id: str) -> store.TenantRow:
    """The tenant's row, locked until the transaction ends; NOT_FOUND if it is deleted or absent."""
    row = await store.get_tenant(uow.session, tenant_id, lock=True)
    if row is None or row.status == "deleted":
        raise NotFound(f"tenant {tenant_id} does not exist")
    return row
