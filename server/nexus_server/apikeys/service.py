"""ApiKeyService: request -> domain -> workflow -> response, nothing else."""

from __future__ import annotations

from nexus.apikey.v1 import api_key_pb2
from nexus.apikey.v1 import apikey_service_pb2 as pb
from nexus.apikey.v1.apikey_service_pb2_grpc import ApiKeyServiceServicer
from nexus_server.apikeys import answers, messages, rules, workflows
from nexus_server.apikeys.verifier import KeyVerifier
from nexus_server.app.context import AppContext
from nexus_server.auth.principal import TenantStatus
from nexus_server.interceptors.call import ServicerContext, current_call
from nexus_server.ratelimit.limiter import Limiter


class ApiKeyServicer(ApiKeyServiceServicer):
    def __init__(self, ctx: AppContext, verifier: KeyVerifier, limiter: Limiter):
        self.ctx = ctx
        self.db = ctx.db
        self.verifier = verifier
        self.limiter = limiter

    async def CreateApiKey(
        self, request: pb.CreateApiKeyRequest, context: ServicerContext
    ) -> pb.CreateApiKeyResponse:
        call, new = current_call(), messages.new_key(request)
        caller = call.require_principal()
        async with self.db.unit_of_work() as uow:
            row, full_key = await workflows.issue_key(
                uow,
                tenant_id=call.tenant_id,
                created_by=caller.user_id,
                grantor=rules.grantor_of(caller),
                **new,
            )
        return messages.created(row, full_key, self.db.clock.now())

    async def ListApiKeys(
        self, request: pb.ListApiKeysRequest, context: ServicerContext
    ) -> pb.ListApiKeysResponse:
        query = messages.list_query(request, current_call().tenant_id)
        async with self.db.unit_of_work(readonly=True) as uow:
            rows, token = await workflows.list_keys(uow, query)
        return messages.keys_page(rows, token, self.db.clock.now())

    async def GetApiKey(self, request: pb.GetApiKeyRequest, context: ServicerContext) -> api_key_pb2.ApiKey:
        async with self.db.unit_of_work(readonly=True) as uow:
            row = await workflows.get_key(uow, current_call().tenant_id, request.id)
        return messages.api_key(row, self.db.clock.now())

    async def UpdateApiKey(
        self, request: pb.UpdateApiKeyRequest, context: ServicerContext
    ) -> api_key_pb2.ApiKey:
        call, change = current_call(), messages.key_update(request)
        grantor = rules.grantor_of(call.principal)
        async with self.db.unit_of_work() as uow:
            row = await workflows.update_key(
                uow, self.ctx.revocations, call.tenant_id, request.api_key.id, change, grantor=grantor
            )
        return messages.api_key(row, self.db.clock.now())

    async def RotateApiKey(
        self, request: pb.RotateApiKeyRequest, context: ServicerContext
    ) -> pb.RotateApiKeyResponse:
        call = current_call()
        grace = messages.grace_period(request)
        grantor = rules.grantor_of(call.principal)
        async with self.db.unit_of_work() as uow:
            row, full_key = await workflows.rotate_key(
                uow, self.ctx.revocations, call.tenant_id, request.id, grace, grantor=grantor
            )
        return messages.rotated(row, full_key, self.db.clock.now())

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
        answer = await answers.verify(
            self.verifier,
            self.limiter,
            self._suspended,
            caller_tenant=call.tenant_id,
            charged=answers.own_charge(call.rate_limits, call.principal),
            **messages.verify_args(request),
        )
        return messages.verify_response(answer)

    async def _suspended(self, tenant_id: str) -> bool:
        call = current_call()
        if tenant_id == call.tenant_id and call.tenant_status is not None:
            return call.tenant_status is TenantStatus.SUSPENDED  # as this call's authentication found it
        if self.ctx.tenants is None:
            return False
        return await self.ctx.tenants.status(tenant_id) is TenantStatus.SUSPENDED
