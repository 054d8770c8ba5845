"""A hard-limited `api_calls` quota through the real server: used up, the tenant's programs
are refused with QUOTA_EXCEEDED until the period ends (UsageService still answers), people
are not, refused calls are not metered, and a plan that lifts the limit lifts the block."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import grpc
import pytest
from google.rpc import error_details_pb2
from sqlalchemy import update

from nexus.apikey.v1 import apikey_service_pb2 as keys_pb
from nexus.apikey.v1 import apikey_service_pb2_grpc as keys_rpc
from nexus.tenant.v1 import tenant_service_pb2 as tenant_pb
from nexus.tenant.v1 import tenant_service_pb2_grpc as tenant_rpc
from nexus.usage.v1 import usage_service_pb2 as pb
from nexus.usage.v1 import usage_service_pb2_grpc as rpc
from nexus_server.app.server import NexusServer
from nexus_server.tenants.invalidation import invalidate_tenant
from nexus_server.tenants.ports import plan_of
from nexus_server.tenants.tables import tenants
from nexus_server.usage import store
from nexus_server.usage.hard_limits import HardLimits
from nexus_server.usage.terms import BUILT_IN_QUOTAS, BuiltInTerms, month_of
from tests.support import issue_key, key_metadata, make_tenant, reason, register_user, status_details

FREE_CALLS = BUILT_IN_QUOTAS["free"]["api_calls"].included


async def _refused(call: object) -> grpc.aio.AioRpcError | None:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as error:
        return error
    return None


async def _eventually_refused(stub: keys_rpc.ApiKeyServiceStub, key: str) -> grpc.aio.AioRpcError:
    """Call until the block holds: the meter writes the crossing within its interval."""
    request = keys_pb.VerifyApiKeyRequest(key=key, rate_limit_cost=0)
    for _ in range(100):
        error = await _refused(stub.VerifyApiKey(request, metadata=key_metadata(key)))
        if error is not None:
            return error
        await asyncio.sleep(0.1)
    raise AssertionError("the used-up quota never refused a call")


async def test_a_used_up_hard_limit_refuses_the_tenants_keys_until_the_plan_lifts_it(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel
) -> None:
    srv = server[0]
    if not srv.settings.usage_metering:
        pytest.skip("metering is off")
    owner = await register_user(channel)
    tenant_id = await make_tenant(srv, owner.user_id)
    key = await issue_key(srv, tenant_id, ["auth:introspect", "usage:read"])
    start, end = month_of(datetime.now(UTC))
    async with srv.db.unit_of_work() as uow:  # the period so far: three calls short of the quota
        await store.add_period_totals(uow.session, {(tenant_id, "api_calls", start): FREE_CALLS - 3})

    keys = keys_rpc.ApiKeyServiceStub(channel)
    error = await _eventually_refused(keys, key)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert reason(error) == "QUOTA_EXCEEDED"
    (failure,) = status_details(error, error_details_pb2.QuotaFailure)
    assert [v.subject for v in failure.violations] == ["metric:api_calls"]
    (retry,) = status_details(error, error_details_pb2.RetryInfo)
    reset_in = retry.retry_delay.seconds
    assert 0 < reset_in <= (end - datetime.now(UTC)).total_seconds() + 1

    # The program can still see why; CheckQuota answers rather than refuses.
    usage = rpc.UsageServiceStub(channel)
    check = await usage.CheckQuota(
        pb.CheckQuotaRequest(metric="api_calls", quantity=1), metadata=key_metadata(key)
    )
    assert not check.allowed
    # People (the console, the CLI) are not refused: they must be able to look and upgrade.
    people = tenant_rpc.TenantServiceStub(channel)
    got = await people.GetTenant(tenant_pb.GetTenantRequest(id=tenant_id), metadata=owner.metadata(tenant_id))
    assert got.id == tenant_id

    # Refused calls are not metered: after several more refusals, `used` stays where it was.
    await asyncio.sleep(1.5)  # let every call before the block be written
    async with srv.db.unit_of_work(readonly=True) as uow:
        used = (await store.period_totals(uow.session, tenant_id, start))["api_calls"]
    for _ in range(5):
        assert await _refused(
            keys.VerifyApiKey(
                keys_pb.VerifyApiKeyRequest(key=key, rate_limit_cost=0), metadata=key_metadata(key)
            )
        )
    await asyncio.sleep(1.5)
    async with srv.db.unit_of_work(readonly=True) as uow:
        after = (await store.period_totals(uow.session, tenant_id, start))["api_calls"]
    assert after == used

    # A replica that starts now learns of the block from the database.
    fresh = HardLimits(srv.db, BuiltInTerms(plan_of), srv.ctx.revocations)
    await fresh.reload()
    assert fresh.is_blocked(tenant_id)

    # An upgrade (billing changes the plan and signals the tenant) lifts the block on every replica.
    async with srv.db.unit_of_work() as uow:
        await uow.session.execute(update(tenants).where(tenants.c.id == tenant_id).values(plan_id="pro"))
        await invalidate_tenant(uow, srv.ctx.revocations, tenant_id)
    request = keys_pb.VerifyApiKeyRequest(key=key, rate_limit_cost=0)
    for _ in range(50):
        if await _refused(keys.VerifyApiKey(request, metadata=key_metadata(key))) is None:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the upgrade did not lift the block")
    await fresh.reload()
    assert not fresh.is_blocked(tenant_id)
