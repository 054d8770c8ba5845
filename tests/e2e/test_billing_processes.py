"""Billing across two real `nexus serve` processes on one PostgreSQL, both configured for the
Stripe double in this test process: the billing cycle run on both at once bills an overage
once and suspends once; the suspension reaches the other process's authentication; a payment
delivered to either process reactivates the tenant everywhere."""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.api import httpbody_pb2
from sqlalchemy import func, insert, select, update

from nexus.apikey.v1 import apikey_service_pb2 as keys_pb
from nexus.apikey.v1 import apikey_service_pb2_grpc as keys_rpc
from nexus.billing.v1 import billing_cycle_pb2 as cycle_pb
from nexus.billing.v1 import billing_service_pb2 as pb
from nexus.billing.v1 import billing_service_pb2_grpc as rpc
from nexus.tenant.v1 import tenant_pb2
from nexus.tenant.v1 import tenant_service_pb2 as tenant_pb
from nexus.tenant.v1 import tenant_service_pb2_grpc as tenant_rpc
from nexus_server.apikeys.workflows import issue_key
from nexus_server.billing.catalog import DEFAULT
from nexus_server.billing.stripe_provider import StripeProvider
from nexus_server.billing.sync import prices_of
from nexus_server.billing.tables import billing_periods, billing_subscriptions
from nexus_server.config import ROOT
from nexus_server.db.engine import create_async
from nexus_server.db.uow import Database
from nexus_server.usage.tables import usage_daily
from tests.e2e.conftest import NEXUS, nexus_env, replicas_on
from tests.stripe_double import StripeDouble
from tests.support import PASSWORD, User, key_metadata, login, reason, register_user

SECRET = "whsec_processes_signing_secret"
pytestmark = pytest.mark.e2e


@pytest.fixture
def double() -> Iterator[StripeDouble]:
    with StripeDouble.start() as running:
        yield running


async def _in_db(url: str, *statements: Any) -> None:
    db = Database(create_async(url))
    try:
        async with db.unit_of_work() as uow:
            for statement in statements:
                await uow.session.execute(statement)
    finally:
        await db.dispose()


async def _key(url: str, tenant_id: str) -> str:
    db = Database(create_async(url))
    try:
        async with db.unit_of_work() as uow:
            _, key = await issue_key(uow, tenant_id=tenant_id, name="svc", scopes=["auth:introspect"])
    finally:
        await db.dispose()
    return key


def _admin(env: dict[str, str]) -> tuple[str, str]:
    email = f"ops-{uuid.uuid4().hex[:8]}@example.com"
    made = subprocess.run(
        [NEXUS, "admin", "create", email],
        env={**env, "NEXUS_ADMIN_PASSWORD": PASSWORD},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    # "created platform administrator usr_… <email>"
    user_id = next(word for word in made.stdout.split() if word.startswith("usr_"))
    return email, user_id


async def _deliver(channel: grpc.aio.Channel, events: list[dict[str, Any]]) -> None:
    stub = rpc.BillingServiceStub(channel)
    for event in events:
        payload = StripeDouble.event_payload(event)
        await stub.HandleStripeWebhook(
            httpbody_pb2.HttpBody(content_type="application/json", data=payload),
            metadata=(("stripe-signature", StripeDouble.sign(payload, SECRET)),),
        )


async def _answer(channel: grpc.aio.Channel, key: str) -> str:
    try:
        await keys_rpc.ApiKeyServiceStub(channel).VerifyApiKey(
            keys_pb.VerifyApiKeyRequest(key=key, rate_limit_cost=0), metadata=key_metadata(key)
        )
    except grpc.aio.AioRpcError as error:
        return reason(error)
    return "served"


async def _until(channel: grpc.aio.Channel, key: str, wanted: str) -> float:
    started = time.monotonic()
    while await _answer(channel, key) != wanted:
        assert time.monotonic() - started < 15, f"the key was never {wanted}"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def test_two_processes_bill_once_suspend_once_and_follow_each_other(
    postgres: str, double: StripeDouble, tmp_path_factory: pytest.TempPathFactory
) -> None:
    await StripeProvider("sk_test_processes", api_base=double.api_base).sync_catalog(prices_of(DEFAULT))
    stripe_env = {
        "NEXUS_STRIPE_API_KEY": "sk_test_processes",
        "NEXUS_STRIPE_API_BASE": double.api_base,
        "NEXUS_STRIPE_WEBHOOK_SECRET": SECRET,
        "NEXUS_BILLING_CYCLE_SECONDS": "0",
    }
    with replicas_on(postgres, tmp_path_factory, 2, **stripe_env) as (a_address, b_address):
        async with grpc.aio.insecure_channel(a_address) as a, grpc.aio.insecure_channel(b_address) as b:
            owner: User = await register_user(a)
            made = await tenant_rpc.TenantServiceStub(a).CreateTenant(
                tenant_pb.CreateTenantRequest(
                    tenant=tenant_pb2.Tenant(slug=f"p-{uuid.uuid4().hex[:8]}", display_name="Two")
                ),
                metadata=owner.metadata(),
            )
            tenant_id = made.id
            owner = await login(a, owner.email, owner.user_id, tenant_id)
            key = await _key(postgres, tenant_id)
            session = await rpc.BillingServiceStub(a).CreateCheckoutSession(
                pb.CreateCheckoutSessionRequest(tenant_id=tenant_id, plan_id="pro"),
                metadata=owner.metadata(tenant_id),
            )
            await _deliver(a, double.complete_checkout(session.checkout_session_id))
            sub = await rpc.BillingServiceStub(b).GetSubscription(
                pb.GetSubscriptionRequest(tenant_id=tenant_id), metadata=owner.metadata(tenant_id)
            )
            assert sub.plan_id == "pro"  # the other process reads what the first applied

            failed = double.fail_renewal(sub.stripe_subscription_id)
            await _deliver(a, failed)
            today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
            start, end = today - timedelta(days=31), today - timedelta(days=1)
            await _in_db(
                postgres,
                update(billing_subscriptions)
                .where(
                    billing_subscriptions.c.tenant_id == tenant_id,
                    billing_subscriptions.c.status == "past_due",
                )
                .values(grace_end_time=datetime.now(UTC) - timedelta(seconds=1)),
                # The trial, the first period, ended a day ago with 777 calls over pro's quota.
                update(billing_periods)
                .where(
                    billing_periods.c.tenant_id == tenant_id,
                    billing_periods.c.period_start
                    == select(func.min(billing_periods.c.period_start))
                    .where(billing_periods.c.tenant_id == tenant_id)
                    .scalar_subquery(),
                )
                .values(period_start=start, period_end=end),
                insert(usage_daily).values(
                    tenant_id=tenant_id, metric="api_calls", day=start, quantity=1_000_777
                ),
            )
            env = nexus_env(tmp_path_factory.mktemp("admin"), NEXUS_DATABASE_URL=postgres, **stripe_env)
            email, user_id = _admin(env)
            admin = await login(a, email, user_id)
            items_before = double.calls("POST /v1/invoiceitems")
            request = pb.RunBillingCycleRequest(tenant_ids=[tenant_id])
            runs = await asyncio.gather(
                rpc.BillingServiceStub(a).RunBillingCycle(request, metadata=admin.metadata()),
                rpc.BillingServiceStub(b).RunBillingCycle(request, metadata=admin.metadata()),
                return_exceptions=True,
            )
            done = [r for r in runs if isinstance(r, pb.RunBillingCycleResponse)]
            refused = [r for r in runs if isinstance(r, grpc.aio.AioRpcError)]
            assert done and all(reason(e) == "BILLING_CYCLE_IN_PROGRESS" for e in refused), runs
            suspended = [
                a
                for r in done
                for a in r.actions
                if a.kind == cycle_pb.BILLING_CYCLE_ACTION_KIND_TENANT_SUSPENDED
            ]
            assert len(suspended) == 1
            assert sum(len(r.overage_charges) for r in done) == 1
            assert double.calls("POST /v1/invoiceitems") == items_before + 1

            took = await _until(b, key, "TENANT_SUSPENDED")
            print(f"suspension reached the other process's authentication after {took:.3f} s")
            invoice_id = next(
                e["data"]["object"]["id"] for e in failed if e["type"] == "invoice.payment_failed"
            )
            await _deliver(b, double.pay_invoice(invoice_id))
            await _until(a, key, "served")
