"""Tenant workflows: create, read, update, list and resolve (lifecycle.py holds the rest).

Each takes a unit of work, writes its event in the same transaction, and sends an
invalidation through the revocation feed when it changes who may act in the tenant, so
every replica's directory forgets its cached answer within a poll interval.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime

from nexus_server.auth.revocations import Revocations
from nexus_server.common import pagination
from nexus_server.common.errors import (
    AlreadyExists,
    NotFound,
    PermissionDenied,
)
from nexus_server.common.fieldmask import fields_to_update
from nexus_server.common.ids import new_id
from nexus_server.common.validation import Violations
from nexus_server.db.uow import UnitOfWork
from nexus_server.tenants import domain_proof, rules, store
from nexus_server.tenants.actor import Actor
from nexus_server.tenants.invalidation import invalidate_member, invalidate_tenant
from nexus_server.tenants.permissions import BUILT_IN_ROLES, OWNER

__all__ = ["BUILT_IN_ROLES", "FREE_PLAN", "create_tenant", "set_member_roles"]

FREE_PLAN = "free"
_SLUG_CHARS = re.compile(r"^[a-z0-9-]*$")
UPDATABLE = ("slug", "display_name", "domain")


def check_id(tenant_id: str) -> None:
    with Violations() as bad:
        rules.identifier(tenant_id, "ten", "id", bad)


def _slug_filter(value: str, bad: Violations) -> str:
    """A slug to look for: looser than `rules.slug`, so that a search may name part of one."""
    value = value.strip().lower()
    if len(value) > 63 or not _SLUG_CHARS.fullmatch(value):
        bad.add("slug", "must be at most 63 letters, digits and hyphens")
    return value


def event_body(row: store.TenantRow) -> dict[str, object]:
    return {
        "tenant_id": row.id,
        "slug": row.slug,
        "display_name": row.display_name,
        "domain": row.domain or "",
        "status": row.status,
    }


async def _require_unique(uow: UnitOfWork, slug: str | None, domain: str | None, except_id: str = "") -> None:
    if slug and await store.slug_exists(uow.session, slug, except_id=except_id):
        raise AlreadyExists(f"the slug {slug!r} is taken", reason="SLUG_TAKEN", metadata={"slug": slug})
    if domain and await store.domain_exists(uow.session, domain, except_id=except_id):
        raise AlreadyExists(
            f"the domain {domain!r} is taken", reason="DOMAIN_TAKEN", metadata={"domain": domain}
        )


async def write_or_conflict(
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
        id=new_id("ten", at=now),
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
    await write_or_conflict(uow, slug, normal, store.insert_tenant(uow.session, row))
    await store.upsert_membership(uow.session, row.id, owner_user_id, [OWNER], now)
    await uow.append_event(
        "tenant.created",
        {**event_body(row), "owner_user_id": owner_user_id, "plan_id": FREE_PLAN},
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
    check_id(tenant_id)
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
    await write_or_conflict(uow, slug, domain, store.update_tenant(uow.session, tenant_id, values))
    row = await get_tenant(uow, tenant_id)
    await uow.append_event(
        "tenant.updated",
        {**event_body(row), "changed": sorted(k for k in values if k in UPDATABLE)},
        tenant_id=tenant_id,
        subject=tenant_id,
    )
    if "domain" in values:
        await invalidate_tenant(uow, revocations, tenant_id)
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
        check_id(tenant_id)
        row = await store.get_tenant(uow.session, tenant_id)
    if row is None or row.status == "deleted":
        raise NotFound("no tenant matches")
    return row
