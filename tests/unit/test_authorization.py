"""The access decisions of auth/authorization.py, without a server: each caller kind, each
refusal reason, and the rank order of the built-in roles."""

from __future__ import annotations

import pytest

from nexus.common.v1 import access_pb2
from nexus_server.auth import authorization
from nexus_server.auth.principal import Membership, Principal, PrincipalKind, TenantStatus
from nexus_server.auth.roles import BUILT_IN_ROLES, NO_RANK, best_rank
from nexus_server.common.errors import NotFound, PermissionDenied

TENANT, OTHER = "ten_" + "a" * 26, "ten_" + "b" * 26
PERSON = Principal(PrincipalKind.USER, "usr_x", tenant_id=TENANT)
ADMIN_OF_PLATFORM = Principal(PrincipalKind.USER, "usr_p", platform_admin=True)
KEY = Principal(PrincipalKind.API_KEY, "eco_api_k", tenant_id=TENANT, scopes=frozenset({"events:read"}))


def rule(caller: int = access_pb2.CALLER_UNSPECIFIED, **fields: str) -> access_pb2.AccessRule:
    return access_pb2.AccessRule(caller=caller, **fields)  # type: ignore[arg-type]


def member(*roles: str, permissions: frozenset[str] = frozenset()) -> Membership:
    return Membership(TENANT, "usr_x", frozenset(roles), permissions)


def reason(error: pytest.ExceptionInfo[PermissionDenied]) -> str:
    return error.value.reason


def test_built_in_roles_rank_owner_over_admin_over_member_over_read_only() -> None:
    ranks = [best_rank([role]) for role in BUILT_IN_ROLES]
    assert ranks == sorted(ranks, reverse=True) and len(set(ranks)) == 4
    assert best_rank(["rol_custom"]) == NO_RANK and best_rank([]) == NO_RANK
    assert best_rank(["read_only", "admin", "rol_custom"]) == best_rank(["admin"])


def test_a_key_needs_the_rule_s_scope_and_its_own_tenant() -> None:
    authorization.check_key("M", rule(key_scope="events:read"), KEY, "")
    authorization.check_key("M", rule(key_scope="events:read"), KEY, TENANT)
    with pytest.raises(PermissionDenied) as error:
        authorization.check_key("M", rule(access_pb2.CALLER_ADMIN), KEY, "")
    assert reason(error) == "MISSING_SCOPE"  # an RPC for people only
    with pytest.raises(PermissionDenied) as error:
        authorization.check_key("M", rule(key_scope="events:publish"), KEY, "")
    assert reason(error) == "MISSING_SCOPE" and error.value.metadata == {"required_scope": "events:publish"}
    with pytest.raises(PermissionDenied) as error:
        authorization.check_key("M", rule(key_scope="events:read"), KEY, OTHER)
    assert reason(error) == "TENANT_ACCESS_DENIED"
    everything = Principal(PrincipalKind.API_KEY, "eco_api_s", tenant_id=TENANT, scopes=frozenset({"*"}))
    authorization.check_key("M", rule(key_scope="anything:at-all"), everything, TENANT)


def test_people_cannot_call_key_only_rpcs_and_only_platform_admins_call_platform_rpcs() -> None:
    with pytest.raises(PermissionDenied) as error:
        authorization.check_person_may_call("M", rule(key_scope="auth:introspect"), PERSON)
    assert reason(error) == "MISSING_SCOPE"
    with pytest.raises(PermissionDenied) as error:
        authorization.check_person_may_call("M", rule(access_pb2.CALLER_PLATFORM_ADMIN), PERSON)
    assert reason(error) == "ROLE_REQUIRED"
    authorization.check_person_may_call("M", rule(access_pb2.CALLER_PLATFORM_ADMIN), ADMIN_OF_PLATFORM)
    authorization.check_person_may_call("M", rule(access_pb2.CALLER_MEMBER), PERSON)


@pytest.mark.parametrize(
    ("caller", "lowest"),
    [
        (access_pb2.CALLER_MEMBER, "read_only"),
        (access_pb2.CALLER_ADMIN, "admin"),
        (access_pb2.CALLER_OWNER, "owner"),
    ],
)
def test_a_role_reaches_rpcs_of_its_rank_and_below(caller: int, lowest: str) -> None:
    for role in BUILT_IN_ROLES:
        allowed = authorization.role_allows(member(role), rule(caller))
        assert allowed == (best_rank([role]) >= best_rank([lowest])), role


def test_a_custom_role_opens_admin_rpcs_by_permission_but_never_owner_rpcs() -> None:
    custom = member("rol_editor", permissions=frozenset({"tenants.groups.write"}))
    assert authorization.role_allows(custom, rule(access_pb2.CALLER_MEMBER))
    assert authorization.role_allows(custom, rule(access_pb2.CALLER_ADMIN, permission="tenants.groups.write"))
    other = rule(access_pb2.CALLER_ADMIN, permission="tenants.roles.write")
    assert not authorization.role_allows(custom, other)
    assert not authorization.role_allows(custom, rule(access_pb2.CALLER_ADMIN))  # names no permission
    assert not authorization.role_allows(
        custom, rule(access_pb2.CALLER_OWNER, permission="tenants.groups.write")
    )
    with pytest.raises(PermissionDenied) as error:
        authorization.check_role("DeleteTenant", rule(access_pb2.CALLER_OWNER), custom, PERSON)
    assert reason(error) == "ROLE_REQUIRED" and error.value.metadata == {"required_role": "owner"}
    authorization.check_role("DeleteTenant", rule(access_pb2.CALLER_OWNER), custom, ADMIN_OF_PLATFORM)


def test_membership_and_tenant_status() -> None:
    with pytest.raises(PermissionDenied) as error:
        authorization.check_member(TENANT, None, PERSON)
    assert reason(error) == "TENANT_ACCESS_DENIED"
    authorization.check_member(TENANT, None, ADMIN_OF_PLATFORM)
    for missing in (None, TenantStatus.DELETED):
        with pytest.raises(NotFound):
            authorization.check_status(TENANT, missing, ADMIN_OF_PLATFORM)
    with pytest.raises(PermissionDenied) as error:
        authorization.check_status(TENANT, TenantStatus.SUSPENDED, PERSON)
    assert reason(error) == "TENANT_SUSPENDED"
    authorization.check_status(TENANT, TenantStatus.SUSPENDED, PERSON, while_suspended=True)
    authorization.check_status(TENANT, TenantStatus.SUSPENDED, ADMIN_OF_PLATFORM)
    authorization.check_status(TENANT, TenantStatus.ACTIVE, PERSON)
