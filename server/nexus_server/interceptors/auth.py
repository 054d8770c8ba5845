"""Authentication, tenant selection and the caller table, for every Nexus RPC.

For each call: public RPCs pass untouched. Otherwise the credential (`authorization:
Bearer …` or `x-api-key`) becomes a Principal through the identity or API-key capability;
the tenant is chosen (the request's `tenant_id` field, `x-tenant-id`, a custom domain in
`:authority`, or the credential's own tenant); then the RPC's AccessRule (the
`nexus.common.v1.access` option) decides. Refusals: UNAUTHENTICATED (CREDENTIALS_MISSING,
CREDENTIALS_INVALID) and PERMISSION_DENIED (MISSING_SCOPE, ROLE_REQUIRED,
TENANT_ACCESS_DENIED, TENANT_SUSPENDED).
"""

from __future__ import annotations

from nexus.common.v1 import access_pb2
from nexus_server.app.context import AppContext
from nexus_server.auth.principal import Membership, Principal, TenantStatus
from nexus_server.common.errors import (
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from nexus_server.common.ids import is_id
from nexus_server.interceptors.call import Call
from nexus_server.interceptors.layer import nothing_after

KEY_PREFIX = "eco_api_"
_ROLE_RANK = {"read_only": 0, "member": 1, "admin": 2, "owner": 3}
_NEEDED_RANK = {
    access_pb2.CALLER_MEMBER: 0,
    access_pb2.CALLER_ADMIN: 2,
    access_pb2.CALLER_OWNER: 3,
}
_ROLE_NAME = {
    access_pb2.CALLER_MEMBER: "member",
    access_pb2.CALLER_ADMIN: "admin",
    access_pb2.CALLER_OWNER: "owner",
}


def _tenant_field(call: Call, path: str) -> str:
    """The tenant id at `path` (the rule's tenant_field) in the request, if well formed."""
    value: object = call.request
    for part in path.split("."):
        value = getattr(value, part, "")
    # A malformed id names no tenant; the servicer refuses it as INVALID_ARGUMENT.
    return value if isinstance(value, str) and is_id(value, "ten") else ""


_HAS_TENANT_ID: dict[type, bool] = {}


def _tenant_id_of(request: object) -> object:
    """The request's `tenant_id` field, or "" if its type has none. Whether it has one is
    looked up once per type: getattr with a default raises and catches inside protobuf for
    a missing field, which costs more than the rest of tenant selection."""
    has = _HAS_TENANT_ID.get(type(request))
    if has is None:
        has = _HAS_TENANT_ID[type(request)] = hasattr(request, "tenant_id")
    return getattr(request, "tenant_id", "") if has else ""


def credential(metadata: dict[str, str]) -> str:
    """The bearer token or API key the caller sent, or ''."""
    key = metadata.get("x-api-key", "")
    if key:
        return key.strip()
    auth = metadata.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


class Authentication:
    def __init__(self, ctx: AppContext):
        self.ctx = ctx

    async def before(self, call: Call) -> None:
        rule = call.method.access
        if rule is None or rule.caller == access_pb2.CALLER_PUBLIC:
            return  # health, reflection and public RPCs
        principal = await self._authenticate(call.metadata)
        call.principal = principal
        if principal.is_user:
            await self._authorize_user(call, principal, rule)
        else:
            await self._authorize_key(call, principal, rule)

    after = staticmethod(nothing_after)

    async def _authenticate(self, metadata: dict[str, str]) -> Principal:
        token = credential(metadata)
        if not token:
            raise Unauthenticated(
                "this RPC needs credentials: `authorization: Bearer <token or API key>` or `x-api-key`",
                reason="CREDENTIALS_MISSING",
            )
        if token.startswith(KEY_PREFIX):
            if self.ctx.keys is None:
                raise Unauthenticated(
                    "API keys cannot be verified by this server", reason="CREDENTIALS_INVALID"
                )
            return await self.ctx.keys.verify_api_key(token)
        if self.ctx.tokens is None:
            raise Unauthenticated(
                "access tokens cannot be verified by this server", reason="CREDENTIALS_INVALID"
            )
        return await self.ctx.tokens.verify_access_token(token)

    def _requested_tenant(self, call: Call) -> str:
        """The tenant the request names: the field its access rule names (the tenant is the
        resource), else its `tenant_id` field, then `x-tenant-id`."""
        rule = call.method.access
        if rule is not None and rule.tenant_field and call.request is not None:
            own = _tenant_field(call, rule.tenant_field)
            if own:
                return own
        field = _tenant_id_of(call.request)
        if isinstance(field, str) and field:
            return field
        return call.metadata.get("x-tenant-id", "").strip()

    async def _domain_tenant(self, call: Call) -> str:
        host = call.metadata.get("x-forwarded-host") or call.metadata.get(":authority", "")
        host = host.rsplit(":", 1)[0].rstrip(".").lower() if host else ""
        if not host or self.ctx.tenants is None or host in ("localhost", "127.0.0.1"):
            return ""
        return await self.ctx.tenants.tenant_for_domain(host) or ""

    async def _check_status(
        self, tenant_id: str, principal: Principal, *, while_suspended: bool = False
    ) -> TenantStatus | None:
        """The tenant's status (None without a tenant directory), if the call may go on."""
        if self.ctx.tenants is None:
            return None
        status = await self.ctx.tenants.status(tenant_id)
        if status is None or status is TenantStatus.DELETED:
            raise NotFound(f"tenant {tenant_id} does not exist")
        if status is TenantStatus.SUSPENDED and not principal.platform_admin and not while_suspended:
            raise PermissionDenied(f"tenant {tenant_id} is suspended", reason="TENANT_SUSPENDED")
        return status

    async def _authorize_key(self, call: Call, principal: Principal, rule: access_pb2.AccessRule) -> None:
        if not rule.key_scope:
            raise PermissionDenied(
                f"{call.method.name} is for people, not API keys",
                reason="MISSING_SCOPE",
                metadata={"required": "user credentials"},
            )
        if not principal.has_scope(rule.key_scope):
            raise PermissionDenied(
                f"this API key lacks the `{rule.key_scope}` scope",
                reason="MISSING_SCOPE",
                metadata={"required_scope": rule.key_scope},
            )
        requested = self._requested_tenant(call)
        if requested and requested != principal.tenant_id:
            # Another tenant's data looks exactly like missing data to a key.
            raise PermissionDenied("this API key belongs to another tenant", reason="TENANT_ACCESS_DENIED")
        call.tenant_id = principal.tenant_id
        call.tenant_status = await self._check_status(principal.tenant_id, principal)

    async def _authorize_user(self, call: Call, principal: Principal, rule: access_pb2.AccessRule) -> None:
        caller = rule.caller
        if caller == access_pb2.CALLER_UNSPECIFIED:
            raise PermissionDenied(
                f"{call.method.name} is called with an API key holding `{rule.key_scope}`",
                reason="MISSING_SCOPE",
                metadata={"required_scope": rule.key_scope},
            )
        if caller == access_pb2.CALLER_PLATFORM_ADMIN:
            if not principal.platform_admin:
                raise PermissionDenied(
                    "platform administrators only",
                    reason="ROLE_REQUIRED",
                    metadata={"required_role": "platform-admin"},
                )
            call.tenant_id = self._requested_tenant(call)
            return
        tenant_id = self._requested_tenant(call) or await self._domain_tenant(call) or principal.tenant_id
        if caller == access_pb2.CALLER_USER:
            call.tenant_id = tenant_id
            return
        if not tenant_id:
            raise InvalidArgument(
                FieldViolation("x-tenant-id", "name the tenant: this RPC acts on one tenant"),
                reason="TENANT_REQUIRED",
            )
        call.tenant_id = tenant_id
        membership = await self._membership(principal, tenant_id)
        if membership is None:
            if principal.platform_admin:
                await self._check_status(tenant_id, principal)
                return
            raise PermissionDenied(
                f"you are not a member of tenant {tenant_id}", reason="TENANT_ACCESS_DENIED"
            )
        await self._check_status(tenant_id, principal, while_suspended=rule.allowed_while_suspended)
        if not self._role_allows(membership, rule) and not principal.platform_admin:
            raise PermissionDenied(
                f"{call.method.name} needs the {_ROLE_NAME[caller]} role",
                reason="ROLE_REQUIRED",
                metadata={"required_role": _ROLE_NAME[caller]},
            )

    async def _membership(self, principal: Principal, tenant_id: str) -> Membership | None:
        if self.ctx.tenants is not None:
            return await self.ctx.tenants.membership(principal.user_id, tenant_id)
        if tenant_id == principal.tenant_id and principal.roles:
            return Membership(tenant_id, principal.user_id, principal.roles)
        return None

    @staticmethod
    def _role_allows(membership: Membership, rule: access_pb2.AccessRule) -> bool:
        if rule.caller == access_pb2.CALLER_MEMBER:
            return True  # any membership, custom roles only included
        best = max((_ROLE_RANK.get(r, -1) for r in membership.roles), default=-1)
        if best >= _NEEDED_RANK[rule.caller]:
            return True
        # Custom roles open admin RPCs through the permission each names; never owner RPCs.
        return (
            rule.caller != access_pb2.CALLER_OWNER
            and bool(rule.permission)
            and (rule.permission in membership.permissions)
        )
