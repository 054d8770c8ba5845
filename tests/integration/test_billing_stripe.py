"""Billing with Stripe, through the real server and the `stripe` package pointed at the Stripe
double on loopback (tests/stripe_double.py), webhooks signed with Stripe's real scheme.

A server configured for Stripe shares the session's database with the session's server
(local provider), which stands in for a second replica: suspension must reach it too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.api import httpbody_pb2
from sqlalchemy import insert, select, update

from nexus.apikey.v1 import apikey_service_pb2 as keys_pb
from nexus.apikey.v1 import apikey_service_pb2_grpc as keys_rpc
from nexus.billing.v1 import billing_cycle_pb2 as cycle_pb
from nexus.billing.v1 import billing_service_pb2 as pb
from nexus.billing.v1 import billing_service_pb2_grpc as rpc
from nexus.billing.v1 import invoice_pb2, subscription_pb2
from nexus_server.app.server import NexusServer, create_server
from nexus_server.billing.sync import prices_of
from nexus_server.billing.tables import billing_periods, billing_subscriptions
from nexus_server.config import Settings
from nexus_server.identity.tables import mail_outbox
from nexus_server.usage.tables import usage_daily
from tests.stripe_double import StripeDouble
from tests.support import (
    User,
    issue_key,
    key_metadata,
    make_tenant,
    platform_admin,
    reason,
    register_user,
    set_roles,
)

SECRET = "whsec_nexus_test_signing_secret"
OLD_SECRET = "whsec_nexus_test_previous_secret"
S = subscription_pb2


@dataclass(frozen=True)
class Stripe:
    server: NexusServer
    channel: grpc.aio.Channel
    double: StripeDouble

    @property
    def stub(self) -> rpc.BillingServiceStub:
        return rpc.BillingServiceStub(self.channel)


@pytest.fixture(scope="module")
def double() -> Iterator[StripeDouble]:
    with StripeDouble.start() as running:
        yield running


@pytest.fixture(scope="module")
async def stripe(settings: Settings, double: StripeDouble) -> AsyncIterator[Stripe]:
    configured = replace(
        settings,
        stripe_api_key="sk_test_nexus",
        stripe_api_base=double.api_base,
        stripe_webhook_secrets=(SECRET, OLD_SECRET),
        billing_cycle_interval=timedelta(0),
        credits_provider="stripe",
    )
    srv, port = await create_server(configured)
    await srv.start()
    provider = srv.capabilities.billing.provider
    assert provider is not None
    await provider.sync_catalog(prices_of(srv.capabilities.billing.catalog))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        await asyncio.wait_for(channel.channel_ready(), 10)
        yield Stripe(srv, channel, double)
    await srv.stop(grace=1)
    close = getattr(provider, "close", None)
    if close is not None:
        close()


def _body(event: dict[str, Any]) -> httpbody_pb2.HttpBody:
    return httpbody_pb2.HttpBody(content_type="application/json", data=StripeDouble.event_payload(event))


async def deliver(
    stripe: Stripe, event: dict[str, Any], *, secret: str = SECRET, timestamp: int | None = None
) -> pb.HandleStripeWebhookResponse:
    body = _body(event)
    header = StripeDouble.sign(body.data, secret, timestamp=timestamp)
    reply: pb.HandleStripeWebhookResponse = await stripe.stub.HandleStripeWebhook(
        body, metadata=(("stripe-signature", header),)
    )
    return reply


async def deliver_all(stripe: Stripe, events: list[dict[str, Any]]) -> list[int]:
    return [(await deliver(stripe, e)).outcome for e in events]


async def _subscribe(stripe: Stripe, plan: str = "pro") -> tuple[User, str, list[dict[str, Any]]]:
    """A tenant whose owner completed a Stripe checkout; the events Stripe would send, unsent."""
    owner = await register_user(stripe.channel)
    tenant_id = await make_tenant(stripe.server, owner.user_id)
    session = await stripe.stub.CreateCheckoutSession(
        pb.CreateCheckoutSessionRequest(tenant_id=tenant_id, plan_id=plan), metadata=owner.metadata(tenant_id)
    )
    assert session.checkout_session_id.startswith("cs_") and session.url
    return owner, tenant_id, stripe.double.complete_checkout(session.checkout_session_id)


async def _subscription(stripe: Stripe, owner: User, tenant_id: str) -> subscription_pb2.Subscription:
    sub: subscription_pb2.Subscription = await stripe.stub.GetSubscription(
        pb.GetSubscriptionRequest(tenant_id=tenant_id), metadata=owner.metadata(tenant_id)
    )
    return sub


def _shape(sub: subscription_pb2.Subscription) -> tuple[object, ...]:
    return (
        sub.plan_id,
        sub.status,
        sub.seats,
        sub.cancel_at_period_end,
        sub.current_period_start_time.seconds,
        sub.current_period_end_time.seconds,
        bool(sub.stripe_subscription_id),
    )


async def test_checkout_then_webhooks_put_the_tenant_on_the_plan(stripe: Stripe) -> None:
    owner, tenant_id, events = await _subscribe(stripe)
    before = await _subscription(stripe, owner, tenant_id)
    assert before.plan_id == "free"  # nothing changes until Stripe says the checkout completed
    outcomes = await deliver_all(stripe, events)
    assert pb.STRIPE_EVENT_OUTCOME_APPLIED in outcomes
    sub = await _subscription(stripe, owner, tenant_id)
    assert (sub.plan_id, sub.status) == ("pro", S.SUBSCRIPTION_STATUS_TRIALING)
    assert sub.stripe_subscription_id.startswith("sub_") and sub.stripe_customer_id.startswith("cus_")
    invoices = await stripe.stub.ListInvoices(
        pb.ListInvoicesRequest(tenant_id=tenant_id), metadata=owner.metadata(tenant_id)
    )
    assert [i.status for i in invoices.invoices] == [invoice_pb2.INVOICE_STATUS_PAID]
    portal = await stripe.stub.CreatePortalSession(
        pb.CreatePortalSessionRequest(tenant_id=tenant_id), metadata=owner.metadata(tenant_id)
    )
    assert portal.url


async def test_the_same_event_delivered_ten_times_at_once_applies_once(stripe: Stripe) -> None:
    _, tenant_id, events = await _subscribe(stripe)
    created = next(e for e in events if e["type"] == "customer.subscription.created")
    replies = await asyncio.gather(*(deliver(stripe, created) for _ in range(10)))
    outcomes = sorted(r.outcome for r in replies)
    assert outcomes == [pb.STRIPE_EVENT_OUTCOME_APPLIED] + [pb.STRIPE_EVENT_OUTCOME_DUPLICATE] * 9
    async with stripe.server.db.unit_of_work(readonly=True) as uow:
        rows = (
            await uow.session.execute(
                select(billing_subscriptions.c.id).where(
                    billing_subscriptions.c.tenant_id == tenant_id, billing_subscriptions.c.plan_id == "pro"
                )
            )
        ).all()
    assert len(rows) == 1


async def test_events_in_reverse_order_end_in_the_same_state_as_in_order(stripe: Stripe) -> None:
    owner_a, tenant_a, events_a = await _subscribe(stripe)
    owner_b, tenant_b, events_b = await _subscribe(stripe)
    await deliver_all(stripe, events_a)
    await deliver_all(stripe, list(reversed(events_b)))
    a, b = await _subscription(stripe, owner_a, tenant_a), await _subscription(stripe, owner_b, tenant_b)
    assert _shape(a)[:4] == _shape(b)[:4] == ("pro", S.SUBSCRIPTION_STATUS_TRIALING, 1, False)
    assert _shape(a)[6] and _shape(b)[6]
    bills = []
    for owner, tenant_id, sub in ((owner_a, tenant_a, a), (owner_b, tenant_b, b)):
        listed = await stripe.stub.ListInvoices(
            pb.ListInvoicesRequest(tenant_id=tenant_id), metadata=owner.metadata(tenant_id)
        )
        bills.append([(i.status, i.subscription_id == sub.id) for i in listed.invoices])
    assert bills[0] == bills[1] == [(invoice_pb2.INVOICE_STATUS_PAID, True)]


async def test_a_bad_or_stale_signature_is_unauthenticated_and_changes_nothing(stripe: Stripe) -> None:
    owner, tenant_id, events = await _subscribe(stripe)
    created = next(e for e in events if e["type"] == "customer.subscription.created")
    for kwargs in ({"secret": "whsec_someone_else"}, {"timestamp": int(time.time()) - 600}):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await deliver(stripe, created, **kwargs)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert reason(caught.value) == "STRIPE_SIGNATURE_INVALID"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stripe.stub.HandleStripeWebhook(_body(created))
    assert reason(caught.value) == "STRIPE_SIGNATURE_INVALID"
    assert (await _subscription(stripe, owner, tenant_id)).plan_id == "free"
    # The refused deliveries claimed nothing: the genuine one still applies.
    assert (await deliver(stripe, created)).outcome == pb.STRIPE_EVENT_OUTCOME_APPLIED


async def test_the_previous_signing_secret_still_verifies_during_a_rotation(stripe: Stripe) -> None:
    _, _, events = await _subscribe(stripe)
    reply = await deliver(stripe, events[0], secret=OLD_SECRET)
    assert reply.outcome in (pb.STRIPE_EVENT_OUTCOME_APPLIED, pb.STRIPE_EVENT_OUTCOME_STALE)


async def test_a_signed_body_that_is_not_an_event_is_invalid_argument(stripe: Stripe) -> None:
    body = httpbody_pb2.HttpBody(content_type="application/json", data=b'{"hello": "world"}')
    header = StripeDouble.sign(body.data, SECRET)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stripe.stub.HandleStripeWebhook(body, metadata=(("stripe-signature", header),))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def _refused_with(
    channel: grpc.aio.Channel, key: str, wanted: str | None, *, within: float = 10.0
) -> None:
    """Wait until a call with `key` is refused with `wanted` (None: until it is served)."""
    stub = keys_rpc.ApiKeyServiceStub(channel)
    started = time.monotonic()
    while time.monotonic() - started < within:
        try:
            await stub.VerifyApiKey(
                keys_pb.VerifyApiKeyRequest(key=key, rate_limit_cost=0), metadata=key_metadata(key)
            )
            got = None
        except grpc.aio.AioRpcError as error:
            got = reason(error)
        if got == wanted:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never {wanted or 'served'} within {within} s")


async def test_dunning_from_a_failed_payment_to_suspension_and_back_on_payment(
    stripe: Stripe, server: tuple[NexusServer, int], channel: grpc.aio.Channel
) -> None:
    owner, tenant_id, events = await _subscribe(stripe)
    await deliver_all(stripe, events)
    sub = await _subscription(stripe, owner, tenant_id)
    key = await issue_key(stripe.server, tenant_id, ["auth:introspect"])

    failed = stripe.double.fail_renewal(sub.stripe_subscription_id)
    await deliver_all(stripe, failed)
    past_due = await _subscription(stripe, owner, tenant_id)
    assert past_due.status == S.SUBSCRIPTION_STATUS_PAST_DUE
    grace = past_due.grace_period_end_time.ToDatetime(UTC) - datetime.now(UTC)
    assert timedelta(days=6, hours=23) < grace <= timedelta(days=7)
    async with stripe.server.db.unit_of_work(readonly=True) as uow:
        mailed = (await uow.session.execute(select(mail_outbox.c.recipient))).scalars().all()
    assert owner.email in mailed  # the first reminder goes out with the failure

    async with stripe.server.db.unit_of_work() as uow:  # the grace period runs out
        await uow.session.execute(
            update(billing_subscriptions)
            .where(billing_subscriptions.c.provider_subscription_id == past_due.stripe_subscription_id)
            .values(grace_end_time=datetime.now(UTC) - timedelta(seconds=1))
        )
    admin = await platform_admin(stripe.server, stripe.channel)
    run = await stripe.stub.RunBillingCycle(
        pb.RunBillingCycleRequest(tenant_ids=[tenant_id]), metadata=admin.metadata()
    )
    assert [a.kind for a in run.actions] == [cycle_pb.BILLING_CYCLE_ACTION_KIND_TENANT_SUSPENDED]
    assert (await _subscription(stripe, owner, tenant_id)).status == S.SUBSCRIPTION_STATUS_SUSPENDED
    # The other replica refuses the tenant's key too (the feed carries it within a poll).
    await _refused_with(channel, key, "TENANT_SUSPENDED")

    invoice_id = next(e["data"]["object"]["id"] for e in failed if e["type"] == "invoice.payment_failed")
    await deliver_all(stripe, stripe.double.pay_invoice(invoice_id))
    assert (await _subscription(stripe, owner, tenant_id)).status == S.SUBSCRIPTION_STATUS_ACTIVE
    await _refused_with(channel, key, None)


async def test_a_member_added_on_a_per_seat_plan_updates_the_stripe_quantity_once(stripe: Stripe) -> None:
    owner, tenant_id, events = await _subscribe(stripe)
    await deliver_all(stripe, events)
    updates = stripe.double.calls("POST /v1/subscriptions/{id}")
    colleague = await register_user(stripe.channel)
    await set_roles(stripe.server, tenant_id, colleague.user_id, ["member"])
    for _ in range(100):
        if (await _subscription(stripe, owner, tenant_id)).seats == 2:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # every replica has heard the membership change by now
    assert (await _subscription(stripe, owner, tenant_id)).seats == 2
    assert stripe.double.calls("POST /v1/subscriptions/{id}") == updates + 1


async def test_overage_on_a_stripe_plan_becomes_one_invoice_item_however_often_the_cycle_runs(
    stripe: Stripe,
) -> None:
    _, tenant_id, events = await _subscribe(stripe)
    await deliver_all(stripe, events)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start, end = today - timedelta(days=31), today - timedelta(days=1)
    async with stripe.server.db.unit_of_work() as uow:
        await uow.session.execute(
            update(billing_periods)
            .where(billing_periods.c.tenant_id == tenant_id)
            .values(period_start=start, period_end=end)
        )
        await uow.session.execute(
            insert(usage_daily).values(tenant_id=tenant_id, metric="api_calls", day=start, quantity=1_000_500)
        )
    admin = await platform_admin(stripe.server, stripe.channel)
    items_before = stripe.double.calls("POST /v1/invoiceitems")
    request = pb.RunBillingCycleRequest(tenant_ids=[tenant_id])
    first = await stripe.stub.RunBillingCycle(request, metadata=admin.metadata())
    second = await stripe.stub.RunBillingCycle(request, metadata=admin.metadata())
    (charge,) = first.overage_charges
    assert (charge.overage_quantity, charge.amount.units, charge.amount.nanos) == (500, 0, 500_000_000)
    assert charge.stripe_invoice_item_id.startswith("ii_")
    assert not second.overage_charges
    assert stripe.double.calls("POST /v1/invoiceitems") == items_before + 1


async def test_an_add_on_priced_for_the_tenant_is_billed_by_stripe_at_that_price(stripe: Stripe) -> None:
    owner, tenant_id, events = await _subscribe(stripe)
    await deliver_all(stripe, events)
    admin = await platform_admin(stripe.server, stripe.channel)
    md = owner.metadata(tenant_id)
    await stripe.stub.EnableAddOn(
        pb.EnableAddOnRequest(tenant_id=tenant_id, add_on_id="liminal"), metadata=md
    )
    priced = pb.SetTenantAddOnPriceRequest(tenant_id=tenant_id, add_on_id="liminal")
    priced.price.currency_code, priced.price.units = "USD", 7
    await stripe.stub.SetTenantAddOnPrice(priced, metadata=admin.metadata(tenant_id))
    sub = await _subscription(stripe, owner, tenant_id)
    provider = stripe.server.capabilities.billing.provider
    assert provider is not None
    held = await provider.get_subscription(sub.stripe_subscription_id)
    assert held.items == {"nexus_plan_pro": 1, f"nexus_addon_liminal_{tenant_id}": 1}

    renewal = stripe.double.renew(sub.stripe_subscription_id)
    await deliver_all(stripe, renewal)
    renewed_id = next(e["data"]["object"]["id"] for e in renewal if e["type"] == "invoice.paid")
    invoices = (
        await stripe.stub.ListInvoices(pb.ListInvoicesRequest(tenant_id=tenant_id), metadata=md)
    ).invoices
    (newest,) = [i for i in invoices if i.stripe_invoice_id == renewed_id]
    amounts = sorted(line.amount.units for line in newest.lines)
    assert amounts == [7, 29]
    assert newest.status == invoice_pb2.INVOICE_STATUS_PAID


async def test_an_event_that_cannot_be_applied_now_is_unavailable_and_applies_on_the_retry(
    stripe: Stripe,
) -> None:
    owner, tenant_id, events = await _subscribe(stripe)
    created = next(e for e in events if e["type"] == "customer.subscription.created")
    stripe.double.outage = True
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await deliver(stripe, created)
    finally:
        stripe.double.outage = False
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert reason(caught.value) == "PAYMENT_PROVIDER_UNAVAILABLE"
    assert (await _subscription(stripe, owner, tenant_id)).plan_id == "free"
    assert (await deliver(stripe, created)).outcome == pb.STRIPE_EVENT_OUTCOME_APPLIED


async def test_an_event_naming_an_object_stripe_does_not_know_is_ignored(stripe: Stripe) -> None:
    _, _, events = await _subscribe(stripe)
    forged = {**events[0], "id": f"evt_{time.time_ns()}"}
    forged["data"] = {"object": {**events[0]["data"]["object"], "id": "sub_nobody"}}
    assert (await deliver(stripe, forged)).outcome == pb.STRIPE_EVENT_OUTCOME_IGNORED


async def test_change_plan_cancel_and_resume_go_through_stripe(stripe: Stripe) -> None:
    owner, tenant_id, events = await _subscribe(stripe)
    await deliver_all(stripe, events)
    md = owner.metadata(tenant_id)
    changed = await stripe.stub.ChangePlan(
        pb.ChangePlanRequest(tenant_id=tenant_id, plan_id="business", seats=6, idempotency_key="biz"),
        metadata=md,
    )
    assert (changed.plan_id, changed.seats) == ("business", 6)
    provider = stripe.server.capabilities.billing.provider
    assert provider is not None
    held = await provider.get_subscription(changed.stripe_subscription_id)
    assert held.items == {"nexus_plan_business": 1, "nexus_seat_business": 1}  # 6 seats, 5 included

    later = await stripe.stub.CancelSubscription(
        pb.CancelSubscriptionRequest(tenant_id=tenant_id), metadata=md
    )
    assert later.cancel_at_period_end
    assert (await provider.get_subscription(later.stripe_subscription_id)).cancel_at_period_end
    resumed = await stripe.stub.ResumeSubscription(
        pb.ResumeSubscriptionRequest(tenant_id=tenant_id), metadata=md
    )
    assert not resumed.cancel_at_period_end

    ended = await stripe.stub.CancelSubscription(
        pb.CancelSubscriptionRequest(tenant_id=tenant_id, immediately=True), metadata=md
    )
    assert ended.status == S.SUBSCRIPTION_STATUS_CANCELED
    deleted = [e for e in stripe.double.events if e["type"] == "customer.subscription.deleted"]
    assert deleted and (await deliver(stripe, deleted[-1])).outcome == pb.STRIPE_EVENT_OUTCOME_STALE
    now = await _subscription(stripe, owner, tenant_id)
    assert (now.plan_id, now.status, now.stripe_subscription_id) == ("free", S.SUBSCRIPTION_STATUS_ACTIVE, "")


async def _balance(stripe: Stripe, owner: User, tenant_id: str) -> int:
    reply = await stripe.stub.GetCreditBalance(
        pb.GetCreditBalanceRequest(tenant_id=tenant_id), metadata=owner.metadata(tenant_id)
    )
    return int(reply.balance)


async def test_a_credit_purchase_lands_once_on_the_paid_webhook_however_often_it_comes(
    stripe: Stripe,
) -> None:
    owner = await register_user(stripe.channel)
    tenant_id = await make_tenant(stripe.server, owner.user_id)
    md = owner.metadata(tenant_id)
    bought = await stripe.stub.PurchaseCredits(
        pb.PurchaseCreditsRequest(tenant_id=tenant_id, credit_package_id="starter", quantity=2), metadata=md
    )
    assert bought.credits == 20_000 and bought.url
    assert await _balance(stripe, owner, tenant_id) == 0  # nothing until Stripe says it is paid
    (completed,) = stripe.double.complete_checkout(bought.checkout_session_id)
    with pytest.raises(grpc.aio.AioRpcError):
        await deliver(stripe, completed, secret="whsec_forged")
    assert await _balance(stripe, owner, tenant_id) == 0
    replies = await asyncio.gather(*(deliver(stripe, completed) for _ in range(10)))
    assert (
        sorted(r.outcome for r in replies)
        == [pb.STRIPE_EVENT_OUTCOME_APPLIED] + [pb.STRIPE_EVENT_OUTCOME_DUPLICATE] * 9
    )
    assert await _balance(stripe, owner, tenant_id) == 20_000
    admin = await platform_admin(stripe.server, stripe.channel)
    revenue = await stripe.stub.GetRevenueMetrics(pb.GetRevenueMetricsRequest(), metadata=admin.metadata())
    assert revenue.credit_revenue.units >= 10  # two Starter packages at 5.00


async def test_a_delayed_payment_credits_on_async_payment_succeeded_only(stripe: Stripe) -> None:
    owner = await register_user(stripe.channel)
    tenant_id = await make_tenant(stripe.server, owner.user_id)
    md = owner.metadata(tenant_id)
    bought = await stripe.stub.PurchaseCredits(
        pb.PurchaseCreditsRequest(tenant_id=tenant_id, credit_package_id="pro"), metadata=md
    )
    (pending,) = stripe.double.complete_checkout(bought.checkout_session_id, delayed=True)
    assert (await deliver(stripe, pending)).outcome == pb.STRIPE_EVENT_OUTCOME_STALE
    assert await _balance(stripe, owner, tenant_id) == 0
    (succeeded,) = stripe.double.succeed_async_payment(bought.checkout_session_id)
    assert (await deliver(stripe, succeeded)).outcome == pb.STRIPE_EVENT_OUTCOME_APPLIED
    assert (await deliver(stripe, pending)).outcome == pb.STRIPE_EVENT_OUTCOME_DUPLICATE
    assert await _balance(stripe, owner, tenant_id) == 50_000
