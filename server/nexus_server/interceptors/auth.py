"""Authentication, tenant selection and the caller table, for every Nexus RPC.

For each call: public RPCs pass untouched. Otherwise the credential (`authorization:
Bearer …` or `x-api-key`) becomes a Principal through the identity or API-key capability;
the tenant is chosen (the request's `tenant_id` field, `x-tenant-id`, a custom domain in
`:authority`, or the credential's own tenant); then the RPC's AccessRule (the
`nexus.common.v1.access` option) decides, through `auth/authorization.py`: this layer
only gathers the facts (principal, tenant, membership, status) that module decides on.
Refusals: UNAUTHENTICATED (CREDENTIALS_MISSING, CREDENTIALS_INVALID) and
PERMISSION_DENIED (MISSING_SCOPE, ROLE_REQUIRED, TENANT_ACCESS_DENIED, TENANT_SUSPENDED).
"""

from __future__ import annotations

from nexus.common.v1 import access_pb2
from nexus_server.app.context import AppContext
from nexus_server.auth import authorization
from nexus_server.auth.principal import Membership, Principal, TenantStatus
from nexus_server.common.errors import FieldViolation, InvalidArgument, Unauthenticated
from nexus_server.common.ids import is_id
from nexus_server.interceptors.call import Call
from nexus_server.interceptors.layer import nothing_after

KEY_PREFIX = "eco_api_"


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
        authorization.check_status(tenant_id, status, principal, while_suspended=while_suspended)
        return status

    async def _authorize_key(self, call: Call, principal: Principal, rule: access_pb2.AccessRule) -> None:
        authorization.check_key(call.method.name, rule, principal, self._requested_tenant(call))
        call.tenant_id = principal.tenant_id
        call.tenant_is_callers = True
        call.tenant_status = await self._check_status(principal.tenant_id, principal)

    async def _authorize_user(self, call: Call, principal: Principal, rule: access_pb2.AccessRule) -> None:
        authorization.check_person_may_call(call.method.name, rule, principal)
        if rule.caller == access_pb2.CALLER_PLATFORM_ADMIN:
            call.tenant_id = self._requested_tenant(call)
            return
        tenant_id = self._requested_tenant(call) or await self._domain_tenant(call) or principal.tenant_id
        if rule.caller == access_pb2.CALLER_USER:
            call.tenant_id = tenant_id
            call.tenant_is_callers = bool(tenant_id) and tenant_id == principal.tenant_id
            return
        if not tenant_id:
            raise InvalidArgument(
                FieldViolation("x-tenant-id", "name the tenant: this RPC acts on one tenant"),
                reason="TENANT_REQUIRED",
            )
        call.tenant_id = tenant_id
        membership = await self._membership(principal, tenant_id)
        authorization.check_member(tenant_id, membership, principal)
        call.tenant_is_callers = membership is not None
        if membership is None:  # a platform administrator acting on a tenant they are not in
            await self._check_status(tenant_id, principal)
            return
        await self._check_status(tenant_id, principal, while_suspended=rule.allowed_while_suspended)
        authorization.check_role(call.method.name, rule, membership, principal)

    async def _membership(self, principal: Principal, tenant_id: str) -> Membership | None:
        if self.ctx.tenants is not None:
            return await self.ctx.tenants.membership(principal.user_id, tenant_id)
        if tenant_id == principal.tenant_id and principal.roles:
            return Membership(tenant_id, principal.user_id, principal.roles)
        return None
