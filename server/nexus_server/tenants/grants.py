"""Project access: grants of user × project × role in a tenant, and the questions asked of
them (CheckPermission, the access token's `projects` claim)."""

from __future__ import annotations

from nexus_server.auth.revocations import Revocations
from nexus_server.common import pagination
from nexus_server.common.errors import FailedPrecondition, NotFound
from nexus_server.common.projects import KEY, ROLE_ORDER, Project
from nexus_server.common.validation import Violations
from nexus_server.db.uow import UnitOfWork
from nexus_server.tenants import access, rules, store
from nexus_server.tenants.invalidation import invalidate_member
from nexus_server.tenants.locking import lock_tenant
from nexus_server.tenants.permissions import BY_NAME


def _project_key(key: str, field: str, bad: Violations) -> None:
    """The shape of a project key (`nexus-sales`), not whether the catalog holds it."""
    if len(key) > 63 or not KEY.fullmatch(key):
        bad.add(field, "must be a project key such as nexus-sales")


def _project(catalog: tuple[Project, ...], key: str, field: str) -> None:
    with Violations() as bad:
        if not key:
            bad.add(field, "is required")
        else:
            _project_key(key, field, bad)
    with Violations(reason="UNKNOWN_PROJECT") as unknown:
        if key not in {p.key for p in catalog}:
            unknown.add(field, f"{key!r} is not in the project catalog")


async def grant(
    uow: UnitOfWork,
    revocations: Revocations,
    catalog: tuple[Project, ...],
    tenant_id: str,
    user_id: str,
    project: str,
    role: str,
    granted_by: str | None,
) -> store.GrantRow:
    with Violations() as bad:
        rules.identifier(user_id, "usr", "user_id", bad)
        if role not in ROLE_ORDER:
            bad.add("role", "must be PROJECT_ROLE_ADMIN, _USER or _READ_ONLY")
    _project(catalog, project, "project")
    await lock_tenant(uow, tenant_id)
    if await store.get_membership(uow.session, tenant_id, user_id) is None:
        raise FailedPrecondition(
            f"{user_id} is not a member of this tenant; add them with AddMember first",
            reason="USER_NOT_MEMBER",
            metadata={"user_id": user_id},
        )
    current = await store.get_grant(uow.session, tenant_id, user_id, project)
    if current is not None and current.role == role:
        return current
    row = store.GrantRow(tenant_id, user_id, project, role, granted_by, uow.clock.now())
    await store.put_grant(uow.session, row)
    await uow.append_event(
        "project_access.granted",
        {
            "user_id": user_id,
            "project": project,
            "role": role,
            "previous_role": current.role if current else "",
        },
        tenant_id=tenant_id,
        subject=user_id,
    )
    await invalidate_member(uow, revocations, tenant_id, user_id)
    return row


async def revoke(
    uow: UnitOfWork,
    revocations: Revocations,
    catalog: tuple[Project, ...],
    tenant_id: str,
    user_id: str,
    project: str,
) -> None:
    with Violations() as bad:
        rules.identifier(user_id, "usr", "user_id", bad)
    with Violations() as bad:
        _project_key(project, "project", bad)
    await lock_tenant(uow, tenant_id)
    if not await store.delete_grant(uow.session, tenant_id, user_id, project):
        raise NotFound(f"{user_id} holds no access to {project} in this tenant")
    await uow.append_event(
        "project_access.revoked",
        {"user_id": user_id, "project": project},
        tenant_id=tenant_id,
        subject=user_id,
    )
    await invalidate_member(uow, revocations, tenant_id, user_id)


async def list_grants(
    uow: UnitOfWork, tenant_id: str, page_size: int, page_token: str, user_id: str, project: str
) -> tuple[list[store.GrantRow], str]:
    with Violations() as bad:
        size = rules.page_size(page_size, bad)
        rules.identifier(user_id, "usr", "user_id", bad, required=False)
        if project:
            _project_key(project, "project", bad)
    filters = [tenant_id, user_id, project]
    after = pagination.decode(page_token, "ListProjectAccess", filters, (str, str))
    rows = await store.list_grants(uow.session, tenant_id, after, size + 1, user_id=user_id, project=project)
    return pagination.page(rows, size, "ListProjectAccess", filters, lambda r: [r.user_id, r.project])


async def check(
    facts: access.Facts,
    catalog: tuple[Project, ...],
    *,
    tenant_id: str,
    subject: str,
    permission: str,
    project: str,
    least_role: str | None,
) -> access.Check:
    with Violations() as bad:
        rules.identifier(subject, "usr", "subject", bad)
        rules.identifier(tenant_id, "ten", "tenant_id", bad)
        if bool(permission) == bool(project):
            bad.add("permission", "give exactly one of permission and project")
        if permission and least_role:
            bad.add("project_role", "must be unset with permission")
        if permission and (len(permission) > 128 or not permission.isascii()):
            bad.add("permission", "must be a permission name such as tenants.members.write")
    with Violations(reason="UNKNOWN_PERMISSION") as unknown:
        if permission and permission not in BY_NAME:
            unknown.add("permission", f"{permission!r} is not in the permission catalog")
    if project:
        _project(catalog, project, "project")
    return await access.check(
        facts,
        tenant_id=tenant_id,
        subject=subject,
        permission=permission,
        project=project,
        least_role=least_role,
    )


async def project_roles(uow: UnitOfWork, tenant_id: str, user_id: str) -> dict[str, str]:
    """`{project: role}` of one member in one tenant: the access token's `projects` claim
    (identity's ProjectGrants port)."""
    return (await store.project_grants_of_user(uow.session, user_id)).get(tenant_id, {})
