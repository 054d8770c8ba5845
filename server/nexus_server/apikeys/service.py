"""ApiKeyService: request -> domain -> workflow -> response, nothing else."""

from __future__ import annotations

from nexus.apikey.v1 import api_key_pb2
from nexus.apikey.v1 import apikey_service_pb2 as pb
from nexus.apikey.v1.apikey_service_pb2_grpc import ApiKeyServiceServicer
from nexus_server.apikeys import messages, rules, verification, workflows
from nexus_server.apikeys.verifier import KeyVerifier
from nexus_server.app.context import AppContext
from nexus_server.auth.principal import TenantStatus
from nexus_server.common.errors import FieldViolation, InvalidArgument
from nexus_server.interceptors.call import Call, ServicerContext, current_call
from nexus_server.ratelimit.limiter import Limiter
from nexus_server.ratelimit.limits import LimitState


class ApiKeyServicer(ApiKeyServiceServicer):
    def __init__(self, ctx: AppContext, verifier: KeyVerifier, limiter: Limiter):
        self.ctx = ctx
        self.db = ctx.db
        self.verifier = verifier
        self.limiter = limiter

    async def CreateApiKey(
        self, request: pb.CreateApiKeyRequest, context: ServicerContext
    ) -> pb.CreateApiKeyResponse:
        if not request.HasField("api_key"):
            raise InvalidArgument(FieldViolation("api_key", "is required"))
        call, key = current_call(), request.api_key
        expire = (
            messages.to_datetime(key.expire_time, "api_key.expire_time")
            if key.HasField("expire_time")
            else None
        )
        async with self.db.unit_of_work() as uow:
            row, full_key = await workflows.issue_key(
                uow,
                tenant_id=call.tenant_id,
                name=key.name,
                scopes=list(key.scopes),
                # An unknown or unset environment becomes "", which issue_key refuses along
                # with any other bad field.
                environment=messages.ENVIRONMENT_NAMES.get(key.environment, ""),
                rate_limit_per_minute=key.rate_limit_per_minute,
                expire_time=expire,
                created_by=call.require_principal().user_id,
                grantor=_grantor(call),
            )
        return pb.CreateApiKeyResponse(api_key=messages.api_key(row, self.db.clock.now()), key=full_key)

    async def ListApiKeys(
        self, request: pb.ListApiKeysRequest, context: ServicerContext
    ) -> pb.ListApiKeysResponse:
        query = workflows.ListQuery(
            tenant_id=current_call().tenant_id,
            page_size=request.page_size,
            page_token=request.page_token,
            environment=messages.environment_of(request.environment, "environment", allow_unspecified=True),
            state=messages.state_of(request.state),
            show_revoked=request.show_revoked,
        )
        async with self.db.unit_of_work(readonly=True) as uow:
            rows, token = await workflows.list_keys(uow, query)
        now = self.db.clock.now()
        return pb.ListApiKeysResponse(
            api_keys=[messages.api_key(r, now) for r in rows], next_page_token=token
        )

    async def GetApiKey(self, request: pb.GetApiKeyRequest, context: ServicerContext) -> api_key_pb2.ApiKey:
        async with self.db.unit_of_work(readonly=True) as uow:
            row = await workflows.get_key(uow, current_call().tenant_id, request.id)
        return messages.api_key(row, self.db.clock.now())

    async def UpdateApiKey(
        self, request: pb.UpdateApiKeyRequest, context: ServicerContext
    ) -> api_key_pb2.ApiKey:
        if not request.HasField("api_key"):
            raise InvalidArgument(FieldViolation("api_key", "is required"))
        call, change = current_call(), messages.key_update(request)
        async with self.db.unit_of_work() as uow:
            row = await workflows.update_key(
                uow, self.ctx.revocations, call.tenant_id, request.api_key.id, change, grantor=_grantor(call)
            )
        return messages.api_key(row, self.db.clock.now())

    async def RotateApiKey(
        self, request: pb.RotateApiKeyRequest, context: ServicerContext
    ) -> pb.RotateApiKeyResponse:
        call = current_call()
        grace = messages.to_timedelta(request.grace_period, "grace_period", rules.MAX_GRACE)
        async with self.db.unit_of_work() as uow:
            row, full_key = await workflows.rotate_key(
                uow, self.ctx.revocations, call.tenant_id, request.id, grace, grantor=_grantor(call)
            )
        return pb.RotateApiKeyResponse(api_key=messages.api_key(row, self.db.clock.now()), key=full_key)

    async def RevokeApiKey(
        self, request: pb.RevokeApiKeyRequest, context: ServicerContext
    ) -> api_key_pb2.ApiKey:
        async with self.db.unit_of_work() as uow:
            row = await workflows.revoke_key(uow, self.ctx.revocations, current_call().tenant_id, request.id)
        return messages.api_key(row, self.db.clock.now())

    async def VerifyApiKey(
        self, request: pb.VerifyApiKeyRequest, context: ServicerContext
    ) -> pb.VerifyApiKeyResponse:
        call = current_call()
        answer = await verification.verify(
            self.verifier,
            self.limiter,
            self._suspended,
            caller_tenant=call.tenant_id,
            key=request.key,
            required_scopes=list(request.required_scopes) if request.required_scopes else [],
            cost=request.rate_limit_cost if request.HasField("rate_limit_cost") else 1,
            charged=_own_key_limit(call),
        )
        return messages.verify_response(answer)

    async def _suspended(self, tenant_id: str) -> bool:
        call = current_call()
        if tenant_id == call.tenant_id and call.tenant_status is not None:
            return call.tenant_status is TenantStatus.SUSPENDED  # as this call's authentication found it
        if self.ctx.tenants is None:
            return False
        return await self.ctx.tenants.status(tenant_id) is TenantStatus.SUSPENDED


def _grantor(call: Call) -> rules.Grantor:
    """What this caller may give a key: a person passed the caller table as a tenant admin and
    may give any scope; an API key only the scopes it holds."""
    principal = call.principal
    if principal is not None and principal.is_user:
        return rules.ANY_SCOPE
    return principal.scopes if principal is not None else frozenset()


def _own_key_limit(call: Call) -> LimitState | None:
    """The calling key's own limit as the rate-limit layer charged it for this call."""
    decision = call.rate_limits
    if decision is None or call.principal is None or not call.principal.key_id:
        return None
    for state in decision.states:
        if state.limit.policy == "apikey":
            return state
    return None
