"""Who may call which RPC: every access decision, pure, in one place.

The authentication layer (interceptors/auth.py) gathers the facts — the verified
Principal, the tenant the request names, the caller's Membership there and the tenant's
status — and asks these functions; each returns nothing or raises the refusal the
contract names. Servicers never re-check tenancy: the tenant a call was admitted to is
`Call.tenant_id`, and every request's own `tenant_id` field is what selected it.

The RPC's rule is its `nexus.common.v1.access` option (proto/nexus/common/v1/access.proto).
"""

from __future__ import annotations

from nexus.common.v1 import access_pb2
from nexus_server.auth.principal import Membership, Principal, TenantStatus
from nexus_server.auth.roles import ADMIN, MEMBER, OWNER, RANK, best_rank
from nexus_server.common.errors import NotFound, PermissionDenied

# The built-in role an RPC's caller kind needs (any membership for CALLER_MEMBER).
_NEEDED_ROLE = {
    access_pb2.CALLER_MEMBER: MEMBER,
    access_pb2.CALLER_ADMIN: ADMIN,
    access_pb2.CALLER_OWNER: OWNER,
}


def check_key(method: str, rule: access_pb2.AccessRule, principal: Principal, requested_tenant: str) -> None:
    """An API key may call the RPC: the RPC takes keys, the key holds its scope, and the
    tenant the request names (if any) is the key's own."""
    if not rule.key_scope:
        raise PermissionDenied(
            f"{method} is for people, not API keys",
            reason="MISSING_SCOPE",
            metadata={"required": "user credentials"},
        )
    if not principal.has_scope(rule.key_scope):
        raise PermissionDenied(
            f"this API key lacks the `{rule.key_scope}` scope",
            reason="MISSING_SCOPE",
            metadata={"required_scope": rule.key_scope},
        )
    if requested_tenant and requested_tenant != principal.tenant_id:
        # Another tenant's data looks exactly like missing data to a key.
        raise PermissionDenied("this API key belongs to another tenant", reason="TENANT_ACCESS_DENIED")


def check_person_may_call(method: str, rule: access_pb2.AccessRule, principal: Principal) -> None:
    """A person may call an RPC of this caller kind at all (before any tenant is chosen)."""
    if rule.caller == access_pb2.CALLER_UNSPECIFIED:
        raise PermissionDenied(
            f"{method} is called with an API key holding `{rule.key_scope}`",
            reason="MISSING_SCOPE",
            metadata={"required_scope": rule.key_scope},
        )
    if rule.caller == access_pb2.CALLER_PLATFORM_ADMIN and not principal.platform_admin:
        raise PermissionDenied(
            "platform administrators only",
            reason="ROLE_REQUIRED",
            metadata={"required_role": "platform-admin"},
        )


def check_status(
    tenant_id: str, status: TenantStatus | None, principal: Principal, *, while_suspended: bool = False
) -> None:
    """The tenant exists and, unless the RPC works while suspended or the caller is a
    platform administrator, is not suspended."""
    if status is None or status is TenantStatus.DELETED:
        raise NotFound(f"tenant {tenant_id} does not exist")
    if status is TenantStatus.SUSPENDED and not principal.platform_admin and not while_suspended:
        raise PermissionDenied(f"tenant {tenant_id} is suspended", reason="TENANT_SUSPENDED")


def check_member(tenant_id: str, membership: Membership | None, principal: Principal) -> None:
    """The person belongs to the tenant (platform administrators may act on any)."""
    if membership is None and not principal.platform_admin:
        raise PermissionDenied(f"you are not a member of tenant {tenant_id}", reason="TENANT_ACCESS_DENIED")


def check_role(
    method: str, rule: access_pb2.AccessRule, membership: Membership, principal: Principal
) -> None:
    """The member's roles reach the RPC's caller kind (platform administrators reach all)."""
    if principal.platform_admin or role_allows(membership, rule):
        return
    needed = _NEEDED_ROLE[rule.caller]
    raise PermissionDenied(
        f"{method} needs the {needed} role",
        reason="ROLE_REQUIRED",
        metadata={"required_role": needed},
    )


def role_allows(membership: Membership, rule: access_pb2.AccessRule) -> bool:
    """Whether a membership reaches an RPC of the rule's caller kind: any membership for
    member RPCs; a built-in role of at least the needed rank; or, for admin RPCs only, a
    custom role granting the permission the rule names. Owner RPCs need `owner`."""
    if rule.caller == access_pb2.CALLER_MEMBER:
        return True  # any membership, custom roles only included
    if best_rank(membership.roles) >= RANK[_NEEDED_ROLE[rule.caller]]:
        return True
    custom_may = bool(rule.permission) and rule.permission in membership.permissions
    return rule.caller != access_pb2.CALLER_OWNER and custom_may
