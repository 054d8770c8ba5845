"""Tenant lifecycle: prove a domain, suspend, reactivate and delete.

Each changes what the directory answers about the tenant, so each ends by sending the
tenant's invalidation in the same transaction.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from nexus_server.auth.revocations import Revocations
from nexus_server.common.errors import AlreadyExists, FailedPrecondition, NotFound, PreconditionViolation
from nexus_server.common.validation import Violations
from nexus_server.db.uow import UnitOfWork
from nexus_server.tenants import domain_proof, rules, store
from nexus_server.tenants.invalidation import invalidate_tenant
from nexus_server.tenants.locking import lock_tenant
from nexus_server.tenants.workflows import check_id, event_body, get_tenant, write_or_conflict


async def verify_domain(
    uow: UnitOfWork, revocations: Revocations, lookup: domain_proof.TxtLookup, tenant_id: str
) -> store.TenantRow:
    """Prove the tenant's pending domain by its TXT record; from then on it resolves to the
    tenant and no other tenant may claim it. Verifying a verified domain changes nothing."""
    check_id(tenant_id)
    await lock_tenant(uow, tenant_id)
    row = await get_tenant(uow, tenant_id)
    if not row.domain or not row.domain_token:
        raise FailedPrecondition(
            "the tenant has no custom domain to verify",
            reason="DOMAIN_VERIFICATION_FAILED",
            violations=[PreconditionViolation("DOMAIN", tenant_id, "set Tenant.domain first")],
        )
    if row.domain_verify_time is not None:
        return row
    if await store.domain_exists(uow.session, row.domain, except_id=tenant_id):
        raise AlreadyExists(
            f"the domain {row.domain!r} is taken", reason="DOMAIN_TAKEN", metadata={"domain": row.domain}
        )
    name, value = domain_proof.challenge_name(row.domain), domain_proof.challenge_value(row.domain_token)
    if not await domain_proof.proves(lookup, row.domain, row.domain_token):
        raise FailedPrecondition(
            f"no TXT record {name} carrying {value!r} was found",
            reason="DOMAIN_VERIFICATION_FAILED",
            metadata={"record_name": name, "record_value": value},
            violations=[PreconditionViolation("DNS", row.domain, f"publish TXT {name} = {value}")],
        )
    now = uow.clock.now()
    write = store.update_tenant(uow.session, tenant_id, {"domain_verify_time": now, "update_time": now})
    await write_or_conflict(uow, None, row.domain, write)
    row = await get_tenant(uow, tenant_id)
    await uow.append_event(
        "tenant.domain_verified", {**event_body(row)}, tenant_id=tenant_id, subject=tenant_id
    )
    await invalidate_tenant(uow, revocations, tenant_id)
    return row


# (uow, revocations, tenant_id) -> how many keys: the apikeys capability's port, handed over
# by app/wiring.py, that revokes every key of a tenant inside the deleting transaction.
RevokeTenantKeys = Callable[[UnitOfWork, Revocations, str], Awaitable[int]]


async def delete_tenant(
    uow: UnitOfWork, revocations: Revocations, revoke_keys: RevokeTenantKeys, tenant_id: str
) -> None:
    """Soft delete: status deleted, API keys revoked, pending invitations revoked."""
    row = await get_tenant(uow, tenant_id)
    now = uow.clock.now()
    await store.set_status(uow.session, tenant_id, "deleted", now)
    revoked = await revoke_keys(uow, revocations, tenant_id)
    for invitation in await store.pending_invitations_of_tenant(uow.session, tenant_id):
        await store.update_invitation(uow.session, invitation.id, {"state": "revoked", "revoke_time": now})
    await uow.append_event(
        "tenant.deleted",
        {**event_body(row), "status": "deleted", "api_keys_revoked": revoked},
        tenant_id=tenant_id,
        subject=tenant_id,
    )
    await invalidate_tenant(uow, revocations, tenant_id)


async def suspend_tenant(
    uow: UnitOfWork, revocations: Revocations, tenant_id: str, reason: str, *, cause: str = "operator"
) -> store.TenantRow:
    with Violations() as bad:
        rules.identifier(tenant_id, "ten", "id", bad)
        reason = rules.text_name(reason, "reason", bad, limit=500)
    row = await _live(uow, tenant_id)
    now = uow.clock.now()
    await store.set_status(uow.session, tenant_id, "suspended", now, cause=cause, reason=reason)
    if row.status == "suspended":
        # Already suspended: keep when it began; only the reason and cause change.
        await store.update_tenant(uow.session, tenant_id, {"suspend_time": row.suspend_time})
    row = await get_tenant(uow, tenant_id)
    await uow.append_event(
        "tenant.suspended",
        {**event_body(row), "cause": cause, "reason": reason},
        tenant_id=tenant_id,
        subject=tenant_id,
    )
    await invalidate_tenant(uow, revocations, tenant_id)
    return row


async def reactivate_tenant(uow: UnitOfWork, revocations: Revocations, tenant_id: str) -> store.TenantRow:
    check_id(tenant_id)
    row = await _live(uow, tenant_id)
    if row.status == "active":
        return row
    await store.set_status(uow.session, tenant_id, "active", uow.clock.now())
    row = await get_tenant(uow, tenant_id)
    await uow.append_event("tenant.reactivated", event_body(row), tenant_id=tenant_id, subject=tenant_id)
    await invalidate_tenant(uow, revocations, tenant_id)
    return row


async def _live(uow: UnitOfWork, tenant_id: str) -> store.TenantRow:
    row = await store.get_tenant(uow.session, tenant_id, lock=True)
    if row is None:
        raise NotFound(f"tenant {tenant_id} does not exist")
    if row.status == "deleted":
        raise FailedPrecondition(
            f"tenant {tenant_id} is deleted",
            reason="TENANT_DELETED",
            violations=[PreconditionViolation("STATE", f"tenants/{tenant_id}", "the tenant is deleted")],
        )
    return row
