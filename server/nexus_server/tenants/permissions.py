"""The permission catalog and what the built-in roles grant.

The catalog is fixed by the release; the built-in roles are defined by it, so that custom
roles, groups and CheckPermission all reason over the same sets. `owner`-only powers
(deleting the tenant, granting `owner`) are not permissions: no custom role can hold them.
"""

from __future__ import annotations

from dataclasses import dataclass

from nexus_server.auth.roles import ADMIN, BUILT_IN_ROLES, MEMBER, OWNER, READ_ONLY

__all__ = ["ADMIN", "BUILT_IN_ROLES", "BY_NAME", "CATALOG", "MEMBER", "OWNER", "READ_ONLY"]
_EVERYONE = BUILT_IN_ROLES
_ADMINS = (OWNER, ADMIN)
_USERS = (OWNER, ADMIN, MEMBER)


@dataclass(frozen=True)
class Permission:
    name: str
    description: str
    built_in_roles: tuple[str, ...]


CATALOG: tuple[Permission, ...] = tuple(
    sorted(
        (
            Permission("tenants.read", "Read the tenant's settings.", _EVERYONE),
            Permission("tenants.write", "Change the tenant's slug, display name and domain.", _ADMINS),
            Permission("tenants.members.read", "List the tenant's members and invitations.", _ADMINS),
            Permission("tenants.members.write", "Add, change and remove members; invite.", _ADMINS),
            Permission("tenants.roles.read", "List the tenant's roles and the permission catalog.", _ADMINS),
            Permission("tenants.roles.write", "Create, change and delete custom roles.", _ADMINS),
            Permission("tenants.groups.read", "List the tenant's groups.", _ADMINS),
            Permission(
                "tenants.groups.write", "Create, change and delete groups and their members.", _ADMINS
            ),
            Permission("tenants.project_access.read", "List who may use which project.", _ADMINS),
            Permission("tenants.project_access.write", "Grant and revoke project access.", _ADMINS),
            Permission("apikeys.read", "List and read the tenant's API keys (never secrets).", _EVERYONE),
            Permission("apikeys.write", "Create, change, rotate and revoke API keys.", _ADMINS),
            Permission("billing.read", "Read the subscription, invoices and credit balance.", _EVERYONE),
            Permission("billing.write", "Change the plan, buy credits, manage payment.", _ADMINS),
            Permission("usage.read", "Read usage, quotas and endpoint statistics.", _EVERYONE),
            Permission("events.read", "Read the tenant's event log and subscribe to it.", _EVERYONE),
            Permission("events.publish", "Publish events to the tenant's log.", _USERS),
            Permission("webhooks.write", "Create, change and delete webhook endpoints.", _ADMINS),
        ),
        key=lambda p: p.name,
    )
)
BY_NAME = {p.name: p for p in CATALOG}

BUILT_IN_PERMISSIONS: dict[str, frozenset[str]] = {
    role: frozenset(p.name for p in CATALOG if role in p.built_in_roles) for role in BUILT_IN_ROLES
}


def is_built_in(role: str) -> bool:
    return role in BUILT_IN_PERMISSIONS
