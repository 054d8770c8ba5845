"""Billing under the local payment provider (no Stripe key), through the real server: the
plan catalog, a checkout that completes at once, plan changes with prorated invoices,
cancel and resume, the billing cycle's overage (billed once, to the cent), renewals and
their invoices, and the revenue metrics."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from sqlalchemy import insert, select, update

from nexus.billing.v1 import billing_service_pb2 as pb
from nexus.billing.v1 import billing_service_pb2_grpc as rpc
from nexus.billing.v1 import invoice_pb2, subscription_pb2
from nexus_server.app.server import NexusServer
from nexus_server.billing.tables import billing_periods, billing_subscriptions
from nexus_server.tenants.tables import tenants
from nexus_server.usage.tables import usage_daily
from tests.support import (
    User,
    field_violations,
    make_tenant,
    platform_admin,
    reason,
    register_user,
    set_roles,
)

ACTIVE = subscription_pb2.SUBSCRIPTION_STATUS_ACTIVE
TRIALING = subscription_pb2.SUBSCRIPTION_STATUS_TRIALING


async def _tenant(srv: NexusServer, channel: grpc.aio.Channel) -> tuple[User, str]:
    owner = await register_user(channel)
    return owner, await make_tenant(srv, owner.user_id)


async def _plan_in_tenants(srv: NexusServer, tenant_id: str) -> str:
    async with srv.db.unit_of_work(readonly=True) as uow:
        return str(
            (
                await uow.session.execute(select(tenants.c.plan_id).where(tenants.c.id == tenant_id))
            ).scalar_one()
        )


async def _checkout(stub: rpc.BillingServiceStub, owner: User, tenant_id: str, plan: str = "pro") -> None:
    await stub.CreateCheckoutSession(
        pb.CreateCheckoutSessionRequest(tenant_id=tenant_id, plan_id=plan), metadata=owner.metadata(tenant_id)
    )


async def test_list_plans_is_public_ordered_by_price_with_exact_overage_prices(
    channel: grpc.aio.Channel,
) -> None:
    reply = await rpc.BillingServiceStub(channel).ListPlans(pb.ListPlansRequest())
    assert [p.id for p in reply.plans] == ["free", "pro", "business", "enterprise"]
    pro = reply.plans[1]
    calls = next(q for q in pro.quotas if q.metric == "api_calls")
    assert (calls.included_quantity, calls.overage_unit_price.units, calls.overage_unit_price.nanos) == (
        1_000_000,
        0,
        1_000_000,
    )
    assert (pro.price.units, pro.seat_price.units, pro.self_serve) == (29, 10, True)
    assert not reply.plans[3].self_serve


async def test_a_new_tenant_has_a_free_subscription_that_reads_the_same_twice(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel
) -> None:
    owner, tenant_id = await _tenant(server[0], channel)
    stub = rpc.BillingServiceStub(channel)
    request = pb.GetSubscriptionRequest(tenant_id=tenant_id)
    first = await stub.GetSubscription(request, metadata=owner.metadata(tenant_id))
    again = await stub.GetSubscription(request, metadata=owner.metadata(tenant_id))
    assert (first.plan_id, first.status, first.id) == ("free", ACTIVE, again.id)
    assert first.current_period_start_time.ToDatetime(UTC).day == 1


async def test_a_local_checkout_completes_at_once_with_a_trial_and_moves_the_tenants_plan(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel
) -> None:
    srv = server[0]
    owner, tenant_id = await _tenant(srv, channel)
    stub = rpc.BillingServiceStub(channel)
    session = await stub.CreateCheckoutSession(
        pb.CreateCheckoutSessionRequest(
            tenant_id=tenant_id, plan_id="pro", success_url="http://localhost:3000/ok"
        ),
        metadata=owner.metadata(tenant_id),
    )
    assert session.url == "http://localhost:3000/ok"
    sub = await stub.GetSubscription(
        pb.GetSubscriptionRequest(tenant_id=tenant_id), metadata=owner.metadata(tenant_id)
    )
    assert (sub.plan_id, sub.status, sub.seats) == ("pro", TRIALING, 1)
    assert sub.stripe_customer_id.startswith("lcus_")
    assert await _plan_in_tenants(srv, tenant_id) == "pro"
    invoices = await stub.ListInvoices(
        pb.ListInvoicesRequest(tenant_id=tenant_id), metadata=owner.metadata(tenant_id)
    )
    (invoice,) = invoices.invoices
    assert invoice.status == invoice_pb2.INVOICE_STATUS_PAID
    assert invoice.total.units == 0  # the trial period costs nothing


async def test_checkout_refuses_bad_plans_and_urls_and_changes_nothing(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel
) -> None:
    owner, tenant_id = await _tenant(server[0], channel)
    stub = rpc.BillingServiceStub(channel)
    md = owner.metadata(tenant_id)
    cases = [
        (
            pb.CreateCheckoutSessionRequest(tenant_id=tenant_id, plan_id="free"),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (pb.CreateCheckoutSessionRequest(tenant_id=tenant_id, plan_id="nope"), grpc.StatusCode.NOT_FOUND),
        (
            pb.CreateCheckoutSessionRequest(tenant_id=tenant_id, plan_id="enterprise"),
            grpc.StatusCode.FAILED_PRECONDITION,
        ),
        (
            pb.CreateCheckoutSessionRequest(
                tenant_id=tenant_id, plan_id="pro", success_url="https://evil.example/x"
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            pb.CreateCheckoutSessionRequest(tenant_id=tenant_id, plan_id="pro", seats=-1),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    ]
    for request, code in cases:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CreateCheckoutSession(request, metadata=md)
        assert caught.value.code() == code, request
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateCheckoutSession(
            pb.CreateCheckoutSessionRequest(
                tenant_id=tenant_id, plan_id="pro", cancel_url="ftp://localhost/"
            ),
            metadata=md,
        )
    assert reason(caught.value) == "REDIRECT_URL_NOT_ALLOWED"
    assert field_violations(caught.value) == ["cancel_url"]
    sub = await stub.GetSubscription(pb.GetSubscriptionRequest(tenant_id=tenant_id), metadata=md)
    assert sub.plan_id == "free"


async def test_a_second_checkout_is_refused_and_change_plan_prorates_on_an_invoice(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel
) -> None:
    srv = server[0]
    owner, tenant_id = await _tenant(srv, channel)
    stub = rpc.BillingServiceStub(channel)
    md = owner.metadata(tenant_id)
    await _checkout(stub, owner, tenant_id)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _checkout(stub, owner, tenant_id, "business")
    assert reason(caught.value) == "PAID_SUBSCRIPTION_EXISTS"
    async with srv.db.unit_of_work() as uow:  # past the trial, so the change is charged
        await uow.session.execute(
            update(billing_subscriptions)
            .where(billing_subscriptions.c.tenant_id == tenant_id, billing_subscriptions.c.plan_id == "pro")
            .values(status="active", trial_end_time=None)
        )
    changed = await stub.ChangePlan(
        pb.ChangePlanRequest(tenant_id=tenant_id, plan_id="business", idempotency_key="up-1"), metadata=md
    )
    again = await stub.ChangePlan(
        pb.ChangePlanRequest(tenant_id=tenant_id, plan_id="business", idempotency_key="up-1"), metadata=md
    )
    assert (changed.plan_id, again.plan_id) == ("business", "business")
    invoices = (await stub.ListInvoices(pb.ListInvoicesRequest(tenant_id=tenant_id), metadata=md)).invoices
    assert len(invoices) == 2  # the checkout's, and one proration (the retry made none)
    proration = invoices[0]
    kinds = {line.kind for line in proration.lines}
    assert kinds == {invoice_pb2.INVOICE_LINE_KIND_PRORATION}
    credit, charge = (line.amount.units * 100 + line.amount.nanos // 10_000_000 for line in proration.lines)
    assert credit < 0 < charge and charge > -credit  # business costs more than pro
    assert await _plan_in_tenants(srv, tenant_id) == "business"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ChangePlan(
            pb.ChangePlanRequest(tenant_id=tenant_id, plan_id="pro", idempotency_key="up-1"), metadata=md
        )
    assert reason(caught.value) == "IDEMPOTENCY_KEY_REUSED"


async def test_cancel_at_period_end_resume_and_cancel_now_back_to_free(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel
) -> None:
    srv = server[0]
    owner, tenant_id = await _tenant(srv, channel)
    stub = rpc.BillingServiceStub(channel)
    md = owner.metadata(tenant_id)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CancelSubscription(pb.CancelSubscriptionRequest(tenant_id=tenant_id), metadata=md)
    assert reason(caught.value) == "FREE_PLAN_NOT_CANCELABLE"
    await _checkout(stub, owner, tenant_id)
    later = await stub.CancelSubscription(pb.CancelSubscriptionRequest(tenant_id=tenant_id), metadata=md)
    assert later.cancel_at_period_end and later.plan_id == "pro"
    resumed = await stub.ResumeSubscription(pb.ResumeSubscriptionRequest(tenant_id=tenant_id), metadata=md)
    assert not resumed.cancel_at_period_end
    ended = await stub.CancelSubscription(
        pb.CancelSubscriptionRequest(tenant_id=tenant_id, immediately=True, reason="too dear"), metadata=md
    )
    assert ended.status == subscription_pb2.SUBSCRIPTION_STATUS_CANCELED
    now = await stub.GetSubscription(pb.GetSubscriptionRequest(tenant_id=tenant_id), metadata=md)
    assert (now.plan_id, now.status) == ("free", ACTIVE) and now.id != ended.id
    assert await _plan_in_tenants(srv, tenant_id) == "free"


async def _ended_pro_period(srv: NexusServer, tenant_id: str, used: int) -> tuple[datetime, datetime]:
    """Move the tenant's pro subscription into a period that ended yesterday, with `used`
    api_calls in the daily rollups of that period."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start, end = today - timedelta(days=31), today - timedelta(days=1)
    async with srv.db.unit_of_work() as uow:
        sub_id = (
            await uow.session.execute(
                select(billing_subscriptions.c.id).where(
                    billing_subscriptions.c.tenant_id == tenant_id, billing_subscriptions.c.plan_id == "pro"
                )
            )
        ).scalar_one()
        await uow.session.execute(
            update(billing_subscriptions)
            .where(billing_subscriptions.c.id == sub_id)
            .values(status="active", trial_end_time=None, anchor=start, period_start=start, period_end=end)
        )
        await uow.session.execute(
            update(billing_periods)
            .where(billing_periods.c.subscription_id == sub_id)
            .values(period_start=start, period_end=end)
        )
        half = used // 2
        await uow.session.execute(
            insert(usage_daily),
            [
                {
                    "tenant_id": tenant_id,
                    "metric": "api_calls",
                    "day": start + timedelta(days=3),
                    "quantity": half,
                },
                {
                    "tenant_id": tenant_id,
                    "metric": "api_calls",
                    "day": end - timedelta(days=1),
                    "quantity": used - half,
                },
                # The day the period ends belongs to the next period: not billed with this one.
                {"tenant_id": tenant_id, "metric": "api_calls", "day": end, "quantity": 999_999},
            ],
        )
    return start, end


async def test_the_cycle_bills_overage_once_to_the_cent_and_renews_onto_a_local_invoice(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel
) -> None:
    srv = server[0]
    owner, tenant_id = await _tenant(srv, channel)
    admin = await platform_admin(srv, channel)
    stub = rpc.BillingServiceStub(channel)
    await _checkout(stub, owner, tenant_id)
    start, end = await _ended_pro_period(srv, tenant_id, 1_000_000 + 1_235)
    request = pb.RunBillingCycleRequest(tenant_ids=[tenant_id])

    revenue_before = await stub.GetRevenueMetrics(pb.GetRevenueMetricsRequest(), metadata=admin.metadata())
    dry = await stub.RunBillingCycle(
        pb.RunBillingCycleRequest(tenant_ids=[tenant_id], dry_run=True), metadata=admin.metadata()
    )
    both: list[pb.RunBillingCycleResponse | BaseException] = await asyncio.gather(
        stub.RunBillingCycle(request, metadata=admin.metadata()),
        stub.RunBillingCycle(request, metadata=admin.metadata()),
        return_exceptions=True,
    )
    first, second = both
    third = await stub.RunBillingCycle(request, metadata=admin.metadata())

    assert len(dry.overage_charges) == 1 and dry.dry_run
    runs = [r for r in (first, second) if isinstance(r, pb.RunBillingCycleResponse)]
    refused = [r for r in (first, second) if isinstance(r, grpc.aio.AioRpcError)]
    assert all(reason(e) == "BILLING_CYCLE_IN_PROGRESS" for e in refused)
    charges = [c for r in (*runs, third) for c in r.overage_charges]
    (charge,) = charges  # one charge, whichever run made it
    assert (charge.used_quantity, charge.overage_quantity) == (1_001_235, 1_235)
    # 1,235 calls × 0.001 USD = 1.235 USD, half up to 1.24 USD.
    assert (charge.amount.units, charge.amount.nanos) == (1, 240_000_000)
    assert charge.period_start_time.ToDatetime(UTC) == start and charge.period_end_time.ToDatetime(UTC) == end
    assert third.overage_charges_already_billed == 1  # found, not billed again
    assert [r.overage_charges_already_billed for r in runs if r.overage_charges] == [0]
    assert sum(r.periods_renewed for r in (*runs, third)) >= 1

    invoices = (
        await stub.ListInvoices(
            pb.ListInvoicesRequest(tenant_id=tenant_id), metadata=owner.metadata(tenant_id)
        )
    ).invoices
    renewal = invoices[0]
    overage_lines = [line for line in renewal.lines if line.kind == invoice_pb2.INVOICE_LINE_KIND_OVERAGE]
    (line,) = overage_lines
    assert (line.quantity, line.amount.units, line.amount.nanos) == (1_235, 1, 240_000_000)
    base = next(line for line in renewal.lines if line.kind == invoice_pb2.INVOICE_LINE_KIND_SUBSCRIPTION)
    assert base.amount.units == 29
    assert renewal.total.units * 100 + renewal.total.nanos // 10_000_000 == 2900 + 124
    sub = await stub.GetSubscription(
        pb.GetSubscriptionRequest(tenant_id=tenant_id), metadata=owner.metadata(tenant_id)
    )
    assert sub.current_period_start_time.ToDatetime(UTC) == end
    revenue_after = await stub.GetRevenueMetrics(pb.GetRevenueMetricsRequest(), metadata=admin.metadata())
    billed = revenue_after.overage_revenue.units * 100 + revenue_after.overage_revenue.nanos // 10_000_000
    before = revenue_before.overage_revenue.units * 100 + revenue_before.overage_revenue.nanos // 10_000_000
    assert billed - before == 124  # the renewal invoice, finalised now, carries the overage


async def test_run_billing_cycle_refuses_a_future_as_of_and_bad_tenant_ids(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel
) -> None:
    admin = await platform_admin(server[0], channel)
    stub = rpc.BillingServiceStub(channel)
    request = pb.RunBillingCycleRequest(tenant_ids=["nope"])
    request.as_of_time.FromDatetime(datetime.now(UTC) + timedelta(days=1))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.RunBillingCycle(request, metadata=admin.metadata())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(caught.value)) == {"as_of_time", "tenant_ids[0]"}


async def test_revenue_counts_a_paying_tenants_monthly_price(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel
) -> None:
    srv = server[0]
    admin = await platform_admin(srv, channel)
    stub = rpc.BillingServiceStub(channel)
    before = await stub.GetRevenueMetrics(pb.GetRevenueMetricsRequest(), metadata=admin.metadata())
    owner, tenant_id = await _tenant(srv, channel)
    await _checkout(stub, owner, tenant_id, "business")
    async with srv.db.unit_of_work() as uow:  # the trial over
        await uow.session.execute(
            update(billing_subscriptions)
            .where(
                billing_subscriptions.c.tenant_id == tenant_id, billing_subscriptions.c.plan_id == "business"
            )
            .values(status="active")
        )
    after = await stub.GetRevenueMetrics(pb.GetRevenueMetricsRequest(), metadata=admin.metadata())

    def cents(m: object) -> int:
        return int(m.units) * 100 + int(m.nanos) // 10_000_000  # type: ignore[attr-defined]

    assert cents(after.mrr) - cents(before.mrr) == 9900
    assert cents(after.arr) == 12 * cents(after.mrr)
    assert after.paying_subscriptions == before.paying_subscriptions + 1
    assert [p.plan_id for p in after.plans] == ["free", "pro", "business", "enterprise"]


async def test_a_member_added_on_a_per_seat_plan_raises_the_seats_once_and_the_next_invoice(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel
) -> None:
    srv = server[0]
    owner, tenant_id = await _tenant(srv, channel)
    stub = rpc.BillingServiceStub(channel)
    md = owner.metadata(tenant_id)
    await _checkout(stub, owner, tenant_id)  # pro: one seat included
    colleague = await register_user(channel)
    await set_roles(srv, tenant_id, colleague.user_id, ["member"])
    seats = 0
    for _ in range(50):  # the membership feed row reaches the seat sync on commit
        seats = (
            await stub.GetSubscription(pb.GetSubscriptionRequest(tenant_id=tenant_id), metadata=md)
        ).seats
        if seats == 2:
            break
        await asyncio.sleep(0.1)
    assert seats == 2
    await set_roles(srv, tenant_id, colleague.user_id, ["admin"])  # a role change adds no seat
    await asyncio.sleep(0.3)
    again = await stub.GetSubscription(pb.GetSubscriptionRequest(tenant_id=tenant_id), metadata=md)
    assert again.seats == 2

    await _ended_pro_period(srv, tenant_id, 0)
    admin = await platform_admin(srv, channel)
    await stub.RunBillingCycle(pb.RunBillingCycleRequest(tenant_ids=[tenant_id]), metadata=admin.metadata())
    renewal = (await stub.ListInvoices(pb.ListInvoicesRequest(tenant_id=tenant_id), metadata=md)).invoices[0]
    (seat_line,) = [line for line in renewal.lines if line.kind == invoice_pb2.INVOICE_LINE_KIND_SEATS]
    assert (seat_line.quantity, seat_line.amount.units) == (1, 10)


async def test_an_add_on_enabled_and_priced_for_the_tenant_is_on_the_next_invoice_at_that_price(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel
) -> None:
    srv = server[0]
    owner, tenant_id = await _tenant(srv, channel)
    admin = await platform_admin(srv, channel)
    stub = rpc.BillingServiceStub(channel)
    md = owner.metadata(tenant_id)
    catalog = await stub.ListAddOns(pb.ListAddOnsRequest())
    assert "liminal" in [a.id for a in catalog.add_ons]
    enable = pb.EnableAddOnRequest(tenant_id=tenant_id, add_on_id="liminal")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.EnableAddOn(enable, metadata=md)
    assert reason(caught.value) == "PAYMENT_METHOD_REQUIRED"  # the free plan takes no add-ons
    await _checkout(stub, owner, tenant_id)
    enabled = await stub.EnableAddOn(enable, metadata=md)
    assert enabled.enabled and not enabled.price_overridden and enabled.price.units == 20
    priced = pb.SetTenantAddOnPriceRequest(tenant_id=tenant_id, add_on_id="liminal")
    priced.price.currency_code, priced.price.units, priced.price.nanos = "USD", 12, 500_000_000
    overridden = await stub.SetTenantAddOnPrice(priced, metadata=admin.metadata(tenant_id))
    assert overridden.price_overridden and (overridden.price.units, overridden.price.nanos) == (
        12,
        500_000_000,
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:  # a tenant admin may not set its own price
        await stub.SetTenantAddOnPrice(priced, metadata=md)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    listed = await stub.ListTenantAddOns(pb.ListTenantAddOnsRequest(tenant_id=tenant_id), metadata=md)
    assert [a.add_on_id for a in listed.add_ons if a.enabled] == ["liminal"]

    await _ended_pro_period(srv, tenant_id, 0)
    await stub.RunBillingCycle(pb.RunBillingCycleRequest(tenant_ids=[tenant_id]), metadata=admin.metadata())
    renewal = (await stub.ListInvoices(pb.ListInvoicesRequest(tenant_id=tenant_id), metadata=md)).invoices[0]
    (line,) = [li for li in renewal.lines if li.kind == invoice_pb2.INVOICE_LINE_KIND_OTHER]
    assert "Liminal" in line.description and (line.amount.units, line.amount.nanos) == (12, 500_000_000)

    disabled = await stub.DisableAddOn(
        pb.DisableAddOnRequest(tenant_id=tenant_id, add_on_id="liminal"), metadata=md
    )
    assert not disabled.enabled and disabled.price_overridden  # the tenant's price is kept for later


async def test_set_tenant_add_on_price_refuses_other_currencies_and_fractions_of_a_cent(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel
) -> None:
    srv = server[0]
    _, tenant_id = await _tenant(srv, channel)
    admin = await platform_admin(srv, channel)
    stub = rpc.BillingServiceStub(channel)
    request = pb.SetTenantAddOnPriceRequest(tenant_id=tenant_id, add_on_id="liminal")
    request.price.currency_code, request.price.units, request.price.nanos = "EUR", 1, 1
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SetTenantAddOnPrice(request, metadata=admin.metadata(tenant_id))
    assert set(field_violations(caught.value)) == {"price.currency_code", "price.nanos"}
