"""Domain rows ↔ tenant.v1 messages (no rules here)."""

from __future__ import annotations

from typing import Any

from nexus.tenant.v1 import member_pb2, project_pb2, role_pb2, tenant_pb2
from nexus_server.common.projects import Project
from nexus_server.common.timestamps import optional_timestamp
from nexus_server.db.uow import UnitOfWork
from nexus_server.tenants import domain_proof, invitations, store
from nexus_server.tenants.members import MemberView
from nexus_server.tenants.permissions import Permission
from nexus_server.tenants.roles import RoleView
from nexus_server.tenants.rules import order_roles

STATUS: dict[str, Any] = {
    "active": tenant_pb2.Tenant.STATUS_ACTIVE,
    "suspended": tenant_pb2.Tenant.STATUS_SUSPENDED,
    "deleted": tenant_pb2.Tenant.STATUS_DELETED,
}
STATUS_NAME: dict[int, str] = {v: k for k, v in STATUS.items()}
CAUSE: dict[str, Any] = {
    "": tenant_pb2.Tenant.SUSPENSION_CAUSE_UNSPECIFIED,
    "operator": tenant_pb2.Tenant.SUSPENSION_CAUSE_OPERATOR,
    "payment_overdue": tenant_pb2.Tenant.SUSPENSION_CAUSE_PAYMENT_OVERDUE,
}
PROJECT_ROLE: dict[str, Any] = {
    "read_only": project_pb2.PROJECT_ROLE_READ_ONLY,
    "user": project_pb2.PROJECT_ROLE_USER,
    "admin": project_pb2.PROJECT_ROLE_ADMIN,
}
PROJECT_ROLE_NAME: dict[int, str] = {v: k for k, v in PROJECT_ROLE.items()}
INVITATION_STATE: dict[str, Any] = {
    "pending": member_pb2.Invitation.STATE_PENDING,
    "accepted": member_pb2.Invitation.STATE_ACCEPTED,
    "revoked": member_pb2.Invitation.STATE_REVOKED,
    "expired": member_pb2.Invitation.STATE_EXPIRED,
}
INVITATION_STATE_NAME: dict[int, str] = {v: k for k, v in INVITATION_STATE.items()}


def tenant(row: store.TenantRow) -> tenant_pb2.Tenant:
    suspended = row.status == "suspended"
    return tenant_pb2.Tenant(
        id=row.id,
        slug=row.slug,
        display_name=row.display_name,
        domain=row.domain or "",
        status=STATUS[row.status],
        plan_id=row.plan_id,
        suspension_cause=CAUSE[row.suspension_cause or "operator"] if suspended else CAUSE[""],
        suspend_reason=(row.suspend_reason or "") if suspended else "",
        suspend_time=optional_timestamp(row.suspend_time) if suspended else None,
        create_time=optional_timestamp(row.create_time),
        update_time=optional_timestamp(row.update_time),
        delete_time=optional_timestamp(row.delete_time),
        domain_verify_time=optional_timestamp(row.domain_verify_time) if row.domain else None,
        domain_challenge_name=domain_proof.challenge_name(row.domain) if row.domain else "",
        domain_challenge_value=(
            domain_proof.challenge_value(row.domain_token) if row.domain and row.domain_token else ""
        ),
    )


def member(view: MemberView) -> member_pb2.Member:
    row = view.row
    return member_pb2.Member(
        tenant_id=row.tenant_id,
        user_id=row.user_id,
        email=view.email,
        display_name=view.display_name,
        roles=view.standing.direct,
        inherited_roles=view.standing.inherited,
        group_ids=view.standing.group_ids,
        added_by=row.added_by or "",
        create_time=optional_timestamp(row.create_time),
        update_time=optional_timestamp(row.update_time or row.create_time),
    )


def invitation(row: store.InvitationRow, uow: UnitOfWork) -> member_pb2.Invitation:
    state = invitations.state_of(row, uow)
    return member_pb2.Invitation(
        id=row.id,
        tenant_id=row.tenant_id,
        email=row.email,
        roles=order_roles(list(row.roles)),
        state=INVITATION_STATE[state],
        invited_by=row.invited_by or "",
        accepted_by=row.accepted_by or "",
        create_time=optional_timestamp(row.create_time),
        send_time=optional_timestamp(row.send_time),
        expire_time=optional_timestamp(row.expire_time),
        accept_time=optional_timestamp(row.accept_time),
        revoke_time=optional_timestamp(row.revoke_time),
    )


def role(view: RoleView) -> role_pb2.Role:
    return role_pb2.Role(
        id=view.id,
        tenant_id=view.tenant_id,
        name=view.name,
        description=view.description,
        permissions=sorted(view.permissions),
        built_in=view.built_in,
        create_time=optional_timestamp(view.row.create_time) if view.row else None,
        update_time=optional_timestamp(view.row.update_time) if view.row else None,
    )


def permission(p: Permission) -> role_pb2.Permission:
    return role_pb2.Permission(name=p.name, description=p.description, built_in_roles=p.built_in_roles)


def group(row: store.GroupRow) -> role_pb2.Group:
    return role_pb2.Group(
        id=row.id,
        tenant_id=row.tenant_id,
        name=row.name,
        description=row.description,
        roles=order_roles(list(row.roles)),
        member_user_ids=row.member_user_ids,
        create_time=optional_timestamp(row.create_time),
        update_time=optional_timestamp(row.update_time),
    )


def project(p: Project) -> project_pb2.Project:
    return project_pb2.Project(key=p.key, display_name=p.display_name, description=p.description)


def grant(row: store.GrantRow) -> project_pb2.ProjectAccess:
    return project_pb2.ProjectAccess(
        tenant_id=row.tenant_id,
        user_id=row.user_id,
        project=row.project,
        role=PROJECT_ROLE[row.role],
        granted_by=row.granted_by or "",
        grant_time=optional_timestamp(row.grant_time),
    )
