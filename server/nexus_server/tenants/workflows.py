"""Tenant lifecycle workflows: create, update, delete, suspend, reactivate, read and list.

Each takes a unit of work, writes its event in the same transaction, and sends an
invalidation through the revocation feed when it changes who may act in the tenant, so
every replica's directory forgets its cached answer within a poll interval.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from nexus_server.auth.revocations import Revocations
from nexus_server.common import pagination
from nexus_server.common.errors import (
    AlreadyExists,
    FailedPrecondition,
    NotFound,
    PermissionDenied,
    PreconditionViolation,
)
from nexus_server.common.fieldmask import fields_to_update
from nexus_server.common.ids import new_id
from nexus_server.common.validation import Violations
from nexus_server.db.uow import UnitOfWork
from nexus_server.tenants import domain_proof, rules, store
from nexus_server.tenants.actor import Actor
from nexus_server.tenants.directory import MEMBERSHIP, TENANT
from nexus_server.tenants.locking import lock_tenant
from nexus_server.tenants.permissions import BUILT_IN_ROLES, OWNER

__all__ = ["BUILT_IN_ROLES", "FREE_PLAN", "create_tenant", "set_member_roles"]

FREE_PLAN = "free"
_SLUG_CHARS = re.compile(r"^[a-z0-9-]*$")
UPDATABLE = ("slug", "display_name", "domain")


def _check_id(tenant_id: str) -> None:
    with Violations() as bad:
        rules.identifier(tenant_id, "ten", "id", bad)


def _slug_filter(value: str, bad: Violations) -> str:
    """A slug to look for: looser than `rules.slug`, so that a search may name part of one."""
    value = value.strip().lower()
    if len(value) > 63 or not _SLUG_CHARS.fullmatch(value):
        bad.add("slug", "must be at most 63 letters, digits and hyphens")
    return value


def _event(row: store.TenantRow) -> dict[str, object]:
    return {
        "tenant_id": row.id,
        "slug": row.slug,
        "display_name": row.display_name,
        "domain": row.domain or "",
        "status": row.status,
    }


async def invalidate_tenant(uow: UnitOfWork, revocations: Revocations, tenant_id: str) -> None:
    # until=now: an invalidation signal for every replica's directory, not a standing block.
    await revocations.revoke(uow, TENANT, tenant_id, until=uow.clock.now())


async def invalidate_member(uow: UnitOfWork, revocations: Revocations, tenant_id: str, user_id: str) -> None:
    await revocations.revoke(uow, MEMBERSHIP, f"{tenant_id}/{user_id}", until=uow.clock.now())


async def _require_unique(uow: UnitOfWork, slug: str | None, domain: str | None, except_id: str = "") -> None:
    if slug and await store.slug_exists(uow.session, slug, except_id=except_id):
        raise AlreadyExists(f"the slug {slug!r} is taken", reason="SLUG_TAKEN", metadata={"slug": slug})
    if domain and await store.domain_exists(uow.session, domain, except_id=except_id):
        raise AlreadyExists(
            f"the domain {domain!r} is taken", reason="DOMAIN_TAKEN", metadata={"domain": domain}
        )


async def _write_or_conflict(
    uow: UnitOfWork, slug: str | None, domain: str | None, write: Awaitable[None]
) -> None:
    try:
        await write
    except store.Conflict:
        # A concurrent writer took the slug or domain between our check and our write.
        await _require_unique(uow, slug, domain)
        raise AlreadyExists("the slug or domain was just taken", reason="SLUG_TAKEN") from None


async def create_tenant(
    uow: UnitOfWork, *, owner_user_id: str, slug: str, display_name: str, domain: str | None = None
) -> store.TenantRow:
    """Create a tenant on the free plan with `owner_user_id` as its only member, an owner."""
    with Violations() as bad:
        slug = rules.slug(slug, "tenant.slug", bad)
        display_name = rules.text_name(display_name, "tenant.display_name", bad, limit=100)
        normal = rules.domain(domain or "", "tenant.domain", bad)
    await _require_unique(uow, slug, normal)
    now = uow.clock.now()
    row = store.TenantRow(
        id=new_id("ten", now_ms=int(now.timestamp() * 1000)),
        slug=slug,
        display_name=display_name,
        domain=normal or None,
        domain_token=domain_proof.new_token() if normal else None,
        status="active",
        suspension_cause=None,
        plan_id=FREE_PLAN,
        create_time=now,
        update_time=now,
        delete_time=None,
    )
    await _write_or_conflict(uow, slug, normal, store.insert_tenant(uow.session, row))
    await store.upsert_membership(uow.session, row.id, owner_user_id, [OWNER], now)
    await uow.append_event(
        "tenant.created",
        {**_event(row), "owner_user_id": owner_user_id, "plan_id": FREE_PLAN},
        tenant_id=row.id,
        subject=row.id,
    )
    await uow.append_event(
        "member.added", {"user_id": owner_user_id, "roles": [OWNER]}, tenant_id=row.id, subject=owner_user_id
    )
    return row


async def set_member_roles(
    uow: UnitOfWork, revocations: Revocations, tenant_id: str, user_id: str, roles: list[str]
) -> None:
    """Give `user_id` exactly `roles` in the tenant (creating the membership), and tell every
    replica's directory to forget its cached answer. For tests and the operator's command:
    no rules are checked."""
    await store.upsert_membership(uow.session, tenant_id, user_id, roles, uow.clock.now())
    await invalidate_member(uow, revocations, tenant_id, user_id)


async def get_tenant(uow: UnitOfWork, tenant_id: str, *, include_deleted: bool = False) -> store.TenantRow:
    _check_id(tenant_id)
    row = await store.get_tenant(uow.session, tenant_id)
    if row is None or (row.status == "deleted" and not include_deleted):
        raise NotFound(f"tenant {tenant_id} does not exist")
    return row


async def update_tenant(
    uow: UnitOfWork, revocations: Revocations, tenant_id: str, given: dict[str, str], paths: list[str]
) -> store.TenantRow:
    fields = fields_to_update(paths, UPDATABLE, given)
    values: dict[str, object] = {}
    with Violations() as bad:
        rules.identifier(tenant_id, "ten", "tenant.id", bad)
        if "slug" in fields:
            values["slug"] = rules.slug(given["slug"], "tenant.slug", bad)
        if "display_name" in fields:
            values["display_name"] = rules.text_name(
                given["display_name"], "tenant.display_name", bad, limit=100
            )
        if "domain" in fields:
            values["domain"] = rules.domain(given["domain"], "tenant.domain", bad) or None
    current = await get_tenant(uow, tenant_id)
    values = {k: v for k, v in values.items() if getattr(current, k) != v}
    if not values:
        return current
    if "domain" in values:
        # A new domain is a new claim: pending, with a token of its own, until it is proved.
        values["domain_token"] = domain_proof.new_token() if values["domain"] else None
        values["domain_verify_time"] = None
    slug = values.get("slug")
    domain = values.get("domain")
    assert slug is None or isinstance(slug, str)
    assert domain is None or isinstance(domain, str)
    await _require_unique(uow, slug, domain, except_id=tenant_id)
    values["update_time"] = uow.clock.now()
    await _write_or_conflict(uow, slug, domain, store.update_tenant(uow.session, tenant_id, values))
    row = await get_tenant(uow, tenant_id)
    await uow.append_event(
        "tenant.updated",
        {**_event(row), "changed": sorted(k for k in values if k in UPDATABLE)},
        tenant_id=tenant_id,
        subject=tenant_id,
    )
    if "domain" in values:
        await invalidate_tenant(uow, revocations, tenant_id)
    return row


async def verify_domain(
    uow: UnitOfWork, revocations: Revocations, lookup: domain_proof.TxtLookup, tenant_id: str
) -> store.TenantRow:
    """Prove the tenant's pending domain by its TXT record; from then on it resolves to the
    tenant and no other tenant may claim it. Verifying a verified domain changes nothing."""
    _check_id(tenant_id)
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
    await _write_or_conflict(uow, None, row.domain, write)
    row = await get_tenant(uow, tenant_id)
    await uow.append_event("tenant.domain_verified", {**_event(row)}, tenant_id=tenant_id, subject=tenant_id)
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
        {**_event(row), "status": "deleted", "api_keys_revoked": revoked},
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
        {**_event(row), "cause": cause, "reason": reason},
        tenant_id=tenant_id,
        subject=tenant_id,
    )
    await invalidate_tenant(uow, revocations, tenant_id)
    return row


async def reactivate_tenant(uow: UnitOfWork, revocations: Revocations, tenant_id: str) -> store.TenantRow:
    _check_id(tenant_id)
    row = await _live(uow, tenant_id)
    if row.status == "active":
        return row
    await store.set_status(uow.session, tenant_id, "active", uow.clock.now())
    row = await get_tenant(uow, tenant_id)
    await uow.append_event("tenant.reactivated", _event(row), tenant_id=tenant_id, subject=tenant_id)
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


@dataclass(frozen=True)
class TenantQuery:
    page_size: int = 0
    page_token: str = ""
    all_tenants: bool = False
    name: str = ""
    slug: str = ""
    domain: str = ""
    status: str = ""  # '' active and suspended; or active | suspended | deleted


async def list_tenants(
    uow: UnitOfWork, actor: Actor, query: TenantQuery
) -> tuple[list[store.TenantRow], str]:
    with Violations() as bad:
        size = rules.page_size(query.page_size, bad)
        name = rules.text_name(query.name, "name", bad, limit=100, required=False)
        slug = _slug_filter(query.slug, bad)
        domain = rules.domain(query.domain, "domain", bad) if query.domain else ""
    if (query.all_tenants or query.status == "deleted") and not actor.platform_admin:
        raise PermissionDenied(
            "only platform administrators list every tenant or deleted ones",
            reason="ROLE_REQUIRED",
            metadata={"required_role": "platform_admin"},
        )
    filters = [query.all_tenants, actor.user_id, name, slug, domain, query.status]
    after = pagination.decode(query.page_token, "ListTenants", filters, (datetime, str))
    where = store.TenantFilter(
        user_id=None if query.all_tenants else actor.user_id,
        name=name,
        slug=slug,
        domain=domain,
        statuses=(query.status,) if query.status else ("active", "suspended"),
    )
    found = await store.list_tenants(uow.session, where, after, size + 1)
    return pagination.page(found, size, "ListTenants", filters, lambda r: [r.create_time, r.id])


async def resolve_tenant(
    uow: UnitOfWork, *, domain: str = "", slug: str = "", tenant_id: str = ""
) -> store.TenantRow:
    with Violations() as bad:
        if not (domain or slug or tenant_id):
            bad.add("selector", "give one of domain, slug and id")
    if domain:
        with Violations() as bad:
            normal = rules.domain(domain, "domain", bad)
            if not normal and not bad:
                bad.add("domain", "must not be blank")
        row = await store.tenant_by_domain(uow.session, normal)
    elif slug:
        with Violations() as bad:
            slug = _slug_filter(slug, bad)
        row = await store.tenant_by_slug(uow.session, slug)
    else:
        _check_id(tenant_id)
        row = await store.get_tenant(uow.session, tenant_id)
    if row is None or row.status == "deleted":
        raise NotFound("no tenant matches")
    return row
