"""Fuzz: every BillingService RPC (plans, subscriptions, add-ons, invoices, the cycle,
revenue, credits and reservations) driven with generated messages never answers INTERNAL
or UNKNOWN, and a refused request changes none of the tenant's billing or credits.

The tenant pays for `pro` under the local provider, so that generated requests can reach the
paths that change things (ChangePlan to `business`, cancel, add-ons) as well as the refusals.
RunBillingCycle is kept to the fuzzed tenant: with no ids it would bill every tenant of the
shared database."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import descriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from nexus.billing.v1 import billing_service_pb2 as pb
from nexus.billing.v1 import billing_service_pb2_grpc as rpc
from nexus_server import contract
from nexus_server.app.server import NexusServer
from nexus_server.billing.tables import (
    billing_accounts,
    billing_invoices,
    billing_subscriptions,
    billing_tenant_add_ons,
    credit_reservations,
    credit_transactions,
)
from tests.fuzzing import UNKNOWN_FIELD, assert_not_internal, messages, raw_call, service_methods
from tests.support import issue_key, key_metadata, make_tenant, platform_admin, register_user

METHODS = service_methods("nexus.billing.v1.BillingService")


def _strings(tenant_id: str) -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(max_size=60),
        st.sampled_from(
            [
                "",
                tenant_id,
                "free",
                "pro",
                "business",
                "enterprise",
                "liminal",
                "USD",
                "EUR",
                "https://127.0.0.1/ok",
                "http://localhost:3000/back",
                "https://evil.example/phish",
                "ten_" + "A" * 22,
                "openai",
                "gpt-4o",
                "starter",
                "rsv_" + "A" * 22,
            ]
        ),
        st.integers(256, 5000).map(lambda n: "k" * n),
    )


async def _billing(server: NexusServer, tenant_id: str) -> tuple[Any, ...]:
    """Everything billing stores about the tenant."""
    async with server.db.unit_of_work(readonly=True) as uow:
        s = uow.session
        return (
            (
                await s.execute(select(billing_accounts).where(billing_accounts.c.tenant_id == tenant_id))
            ).all(),
            (
                await s.execute(
                    select(billing_subscriptions)
                    .where(billing_subscriptions.c.tenant_id == tenant_id)
                    .order_by(billing_subscriptions.c.id)
                )
            ).all(),
            (
                await s.execute(
                    select(billing_invoices.c.id).where(billing_invoices.c.tenant_id == tenant_id)
                )
            ).all(),
            (
                await s.execute(
                    select(billing_tenant_add_ons).where(billing_tenant_add_ons.c.tenant_id == tenant_id)
                )
            ).all(),
            (
                await s.execute(
                    select(credit_transactions.c.id).where(credit_transactions.c.tenant_id == tenant_id)
                )
            ).all(),
            (
                await s.execute(
                    select(credit_reservations).where(credit_reservations.c.tenant_id == tenant_id)
                )
            ).all(),
        )


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
async def test_generated_billing_requests_never_fail_internally_and_a_refusal_changes_nothing(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel, method: descriptor.MethodDescriptor
) -> None:
    srv = server[0]
    owner = await register_user(channel)
    tenant_id = await make_tenant(srv, owner.user_id)
    await rpc.BillingServiceStub(channel).CreateCheckoutSession(
        pb.CreateCheckoutSessionRequest(tenant_id=tenant_id, plan_id="pro"),
        metadata=owner.metadata(tenant_id),
    )
    rule = contract.access_rule(method)
    if rule.caller == 6:  # CALLER_PLATFORM_ADMIN
        metadata: Any = (await platform_admin(srv, channel)).metadata(tenant_id)
    elif method.name in ("HandleStripeWebhook", "HandleRevolutWebhook"):
        metadata = (("stripe-signature", "t=1,v1=00"), ("revolut-signature", "v1=00"))
    elif rule.key_scope and not rule.caller:  # ConsumeCredits and the reservations: programs
        metadata = key_metadata(await issue_key(srv, tenant_id, ["credits:consume"]))
    else:
        metadata = owner.metadata(tenant_id)
    drawn: list[tuple[Any, bool]] = []

    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(request=messages(method.input_type, _strings(tenant_id), max_repeated=4), unknown=st.booleans())
    def draw(request: Any, unknown: bool) -> None:
        drawn.append((request, unknown))

    draw()
    for request, unknown in drawn:
        if method.name == "RunBillingCycle" and not request.tenant_ids:
            request.tenant_ids.append(tenant_id)
        wire = request.SerializeToString() + (UNKNOWN_FIELD if unknown else b"")
        before = await _billing(srv, tenant_id)
        try:
            await raw_call(channel, method)(wire, metadata=metadata)
        except grpc.aio.AioRpcError as error:
            assert_not_internal(error, f"{method.name}({request!r:.300}) → ")
            assert await _billing(srv, tenant_id) == before, f"{method.name} refused but changed billing"
