"""StripeProvider through the real `stripe` package against the Stripe double on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import stripe

from nexus_server.billing.provider import (
    CheckoutRequest,
    InvoiceItemRequest,
    LineItem,
    PaymentCheckoutRequest,
    PriceRef,
    ProviderInvoiceLine,
    ProviderRejected,
    ProviderUnavailable,
)
from nexus_server.billing.stripe_provider import StripeProvider
from tests.stripe_double import StripeDouble

API_KEY = "sk_test_nexus"
PLAN = PriceRef("nexus_plan_pro", "Pro", 1500, "EUR", "month")
SEAT = PriceRef("nexus_seat_pro", "Pro seat", 500, "EUR", "month")
ADDON = PriceRef("nexus_addon_liminal", "Liminal", 900, "EUR", "month")
CATALOG = [PLAN, SEAT, ADDON]
JAN_31 = int(datetime(2027, 1, 31, 12, tzinfo=UTC).timestamp())  # next month has no 31st


@pytest.fixture
def double() -> Iterator[StripeDouble]:
    with StripeDouble.start() as double:
        double.clock = JAN_31
        yield double


@pytest.fixture
def provider(double: StripeDouble) -> Iterator[StripeProvider]:
    provider = StripeProvider(API_KEY, api_base=double.api_base, max_retries=0)
    yield provider
    provider.close()


def checkout(items: list[LineItem], *, trial_days: int = 0) -> CheckoutRequest:
    return CheckoutRequest(
        tenant_id="ten_1",
        customer_id="",
        customer_email="owner@example.com",
        items=items,
        success_url="https://nexus.test/billing/done",
        cancel_url="https://nexus.test/billing",
        trial_days=trial_days,
        idempotency_key="checkout-1",
        metadata={"tenant_id": "ten_1", "plan_id": "pro"},
    )


async def subscribe(provider: StripeProvider, double: StripeDouble, *, trial_days: int = 0) -> str:
    await provider.sync_catalog(CATALOG)
    session = await provider.create_checkout(
        checkout([LineItem(PLAN.lookup_key, 1), LineItem(SEAT.lookup_key, 3)], trial_days=trial_days)
    )
    double.complete_checkout(session.id)
    return (await provider.get_checkout(session.id)).subscription_id


def at(unix: int) -> datetime:
    return datetime.fromtimestamp(unix, UTC)


async def test_sync_catalog_creates_the_missing_prices(provider: StripeProvider) -> None:
    report = await provider.sync_catalog(CATALOG)

    assert (report.created, report.updated, report.unchanged) == ([p.lookup_key for p in CATALOG], [], [])


async def test_sync_catalog_a_second_time_creates_nothing(
    provider: StripeProvider, double: StripeDouble
) -> None:
    await provider.sync_catalog(CATALOG)

    report = await provider.sync_catalog(CATALOG)

    assert (report.unchanged, double.calls("POST /v1/prices")) == ([p.lookup_key for p in CATALOG], 3)


async def test_sync_catalog_reports_a_changed_price_as_updated(provider: StripeProvider) -> None:
    await provider.sync_catalog(CATALOG)

    report = await provider.sync_catalog([PriceRef(PLAN.lookup_key, "Pro", 1900, "EUR", "month"), SEAT])

    assert (report.updated, report.unchanged) == ([PLAN.lookup_key], [SEAT.lookup_key])


async def test_checkout_asks_for_the_catalog_prices(provider: StripeProvider, double: StripeDouble) -> None:
    await provider.sync_catalog(CATALOG)

    session = await provider.create_checkout(checkout([LineItem(PLAN.lookup_key, 1)]))

    assert (session.url.startswith("https://"), session.expire_time) == (True, at(JAN_31 + 86400))


async def test_checkout_of_an_unsynced_price_is_rejected(provider: StripeProvider) -> None:
    with pytest.raises(ProviderRejected) as refusal:
        await provider.create_checkout(checkout([LineItem("nexus_plan_unknown", 1)]))

    assert refusal.value.code == "price_not_found"


async def test_completed_checkout_maps_to_the_subscription(
    provider: StripeProvider, double: StripeDouble
) -> None:
    subscription = await provider.get_subscription(await subscribe(provider, double))

    assert (
        subscription.status,
        dict(subscription.items),
        subscription.current_period_start,
        subscription.current_period_end,
        dict(subscription.metadata),
        subscription.created,
        subscription.customer_id.startswith("cus_"),
        subscription.latest_invoice_id.startswith("in_"),
    ) == (
        "active",
        {PLAN.lookup_key: 1, SEAT.lookup_key: 3},
        at(JAN_31),
        datetime(2027, 2, 28, 12, tzinfo=UTC),
        {"tenant_id": "ten_1", "plan_id": "pro"},
        at(JAN_31),
        True,
        True,
    )


async def test_a_trial_maps_to_trialing_until_its_end(provider: StripeProvider, double: StripeDouble) -> None:
    subscription = await provider.get_subscription(await subscribe(provider, double, trial_days=14))

    trial_end = at(JAN_31 + 14 * 86400)
    assert (subscription.status, subscription.trial_end, subscription.current_period_end) == (
        "trialing",
        trial_end,
        trial_end,
    )


async def test_update_items_twice_with_one_key_changes_the_quantity_once(
    provider: StripeProvider, double: StripeDouble
) -> None:
    subscription_id = await subscribe(provider, double)
    items = [LineItem(PLAN.lookup_key, 1), LineItem(SEAT.lookup_key, 5)]

    await provider.update_items(subscription_id, items, prorate=False, idempotency_key="seats-5")
    updated = await provider.update_items(subscription_id, items, prorate=False, idempotency_key="seats-5")

    assert (updated.items[SEAT.lookup_key], double.calls("POST /v1/subscriptions/{id}")) == (5, 1)


async def test_update_items_adds_and_removes_items(provider: StripeProvider, double: StripeDouble) -> None:
    subscription_id = await subscribe(provider, double)

    updated = await provider.update_items(
        subscription_id,
        [LineItem(PLAN.lookup_key, 1), LineItem(ADDON.lookup_key, 1)],
        prorate=False,
        idempotency_key="addon",
    )

    assert dict(updated.items) == {PLAN.lookup_key: 1, ADDON.lookup_key: 1}


async def test_a_declined_proration_is_rejected_as_card_declined(
    provider: StripeProvider, double: StripeDouble
) -> None:
    subscription_id = await subscribe(provider, double)
    double.decline_next_payment = True

    with pytest.raises(ProviderRejected) as refusal:
        await provider.update_items(
            subscription_id,
            [LineItem(PLAN.lookup_key, 1), LineItem(SEAT.lookup_key, 6)],
            prorate=True,
            idempotency_key="seats-6",
        )

    assert refusal.value.code == "card_declined"


async def test_a_prorated_change_is_invoiced_at_once_as_proration_lines(
    provider: StripeProvider, double: StripeDouble
) -> None:
    subscription_id = await subscribe(provider, double)
    double.clock = JAN_31 + 14 * 86400  # half of a 28-day period left

    updated = await provider.update_items(
        subscription_id,
        [LineItem(PLAN.lookup_key, 1), LineItem(SEAT.lookup_key, 5)],
        prorate=True,
        idempotency_key="seats-5",
    )
    invoice = await provider.get_invoice(updated.latest_invoice_id)

    assert [(line.proration, line.lookup_key, line.amount_minor) for line in invoice.lines] == [
        (True, SEAT.lookup_key, -750),
        (True, SEAT.lookup_key, 1250),
    ]


async def test_a_stopped_stripe_is_unavailable(provider: StripeProvider, double: StripeDouble) -> None:
    double.stop()

    with pytest.raises(ProviderUnavailable):
        await provider.get_subscription("sub_gone")


async def test_a_bad_api_key_is_rejected_without_naming_the_key(double: StripeDouble) -> None:
    provider = StripeProvider("rk_nope_secret", api_base=double.api_base, max_retries=0)
    try:
        with pytest.raises(ProviderRejected) as refusal:
            await provider.get_subscription("sub_1")
    finally:
        provider.close()

    assert "rk_nope_secret" not in str(refusal.value)


async def test_a_missing_subscription_is_rejected_as_resource_missing(provider: StripeProvider) -> None:
    with pytest.raises(ProviderRejected) as refusal:
        await provider.get_subscription("sub_missing")

    assert refusal.value.code == "resource_missing"


async def test_get_invoice_maps_lines_and_amounts(provider: StripeProvider, double: StripeDouble) -> None:
    subscription_id = await subscribe(provider, double)
    subscription = await provider.get_subscription(subscription_id)
    await provider.add_invoice_item(
        InvoiceItemRequest(
            customer_id=subscription.customer_id,
            subscription_id=subscription_id,
            amount_minor=240,
            currency="EUR",
            description="API calls over quota",
            period_start=subscription.current_period_start,
            period_end=subscription.current_period_end,
            idempotency_key="overage-1",
            metadata={"nexus_kind": "overage", "metric": "api_calls"},
        )
    )
    double.renew(subscription_id)

    invoice = await provider.get_invoice((await provider.get_subscription(subscription_id)).latest_invoice_id)

    feb_28, mar_31 = datetime(2027, 2, 28, 12, tzinfo=UTC), datetime(2027, 3, 31, 12, tzinfo=UTC)
    assert (invoice.status, invoice.total_minor, invoice.amount_paid_minor, list(invoice.lines)) == (
        "paid",
        1500 + 3 * 500 + 240,
        1500 + 3 * 500 + 240,
        [
            ProviderInvoiceLine(
                "1 × Pro (at 15.00 / month)", PLAN.lookup_key, 1, 1500, False, feb_28, mar_31
            ),
            ProviderInvoiceLine(
                "3 × Pro seat (at 5.00 / month)", SEAT.lookup_key, 3, 1500, False, feb_28, mar_31
            ),
            ProviderInvoiceLine(
                "API calls over quota",
                "",
                1,
                240,
                False,
                at(JAN_31),
                feb_28,
                {"nexus_kind": "overage", "metric": "api_calls"},
            ),
        ],
    )


async def test_get_invoice_reads_lines_beyond_the_first_page(
    provider: StripeProvider, double: StripeDouble
) -> None:
    subscription_id = await subscribe(provider, double)
    subscription = await provider.get_subscription(subscription_id)
    for n in range(12):
        await provider.add_invoice_item(
            InvoiceItemRequest(
                subscription.customer_id,
                subscription_id,
                100 + n,
                "EUR",
                f"item {n}",
                subscription.current_period_start,
                subscription.current_period_end,
                idempotency_key=f"item-{n}",
            )
        )
    double.renew(subscription_id)

    invoice = await provider.get_invoice((await provider.get_subscription(subscription_id)).latest_invoice_id)

    assert len(invoice.lines) == 2 + 12


async def test_a_failed_renewal_maps_to_past_due_with_a_retry(
    provider: StripeProvider, double: StripeDouble
) -> None:
    subscription_id = await subscribe(provider, double)
    double.fail_renewal(subscription_id)

    subscription = await provider.get_subscription(subscription_id)
    invoice = await provider.get_invoice(subscription.latest_invoice_id)

    assert (subscription.status, invoice.status, invoice.attempt_count, invoice.next_payment_attempt) == (
        "past_due",
        "open",
        1,
        at(JAN_31 + 3 * 86400),
    )


async def test_add_invoice_item_with_one_key_creates_one_item(
    provider: StripeProvider, double: StripeDouble
) -> None:
    subscription_id = await subscribe(provider, double)
    subscription = await provider.get_subscription(subscription_id)
    request = InvoiceItemRequest(
        subscription.customer_id,
        subscription_id,
        240,
        "EUR",
        "API calls over quota",
        subscription.current_period_start,
        subscription.current_period_end,
        idempotency_key="overage-1",
    )

    assert await provider.add_invoice_item(request) == await provider.add_invoice_item(request)


async def test_set_cancel_at_period_end_marks_the_subscription(
    provider: StripeProvider, double: StripeDouble
) -> None:
    subscription_id = await subscribe(provider, double)

    subscription = await provider.set_cancel_at_period_end(subscription_id, True, idempotency_key="cancel-1")

    assert subscription.cancel_at_period_end is True


async def test_cancel_now_ends_the_subscription_once(provider: StripeProvider, double: StripeDouble) -> None:
    subscription_id = await subscribe(provider, double)

    await provider.cancel_now(subscription_id, idempotency_key="end-1")
    subscription = await provider.cancel_now(subscription_id, idempotency_key="end-1")

    assert (subscription.status, subscription.ended_at, double.calls("DELETE /v1/subscriptions/{id}")) == (
        "canceled",
        at(JAN_31),
        1,
    )


async def test_create_portal_returns_the_session_url(provider: StripeProvider, double: StripeDouble) -> None:
    subscription = await provider.get_subscription(await subscribe(provider, double))

    portal = await provider.create_portal(subscription.customer_id, "https://nexus.test/billing")

    assert portal.url.startswith("https://billing.stripe.com/")


async def test_an_old_price_is_known_by_its_product_after_the_catalog_moves_on(
    provider: StripeProvider, double: StripeDouble
) -> None:
    subscription_id = await subscribe(provider, double)
    await provider.sync_catalog([PriceRef(PLAN.lookup_key, "Pro", 1900, "EUR", "month")])
    fresh = StripeProvider(API_KEY, api_base=double.api_base, max_retries=0)  # nothing cached
    try:
        subscription = await fresh.get_subscription(subscription_id)
    finally:
        fresh.close()

    assert dict(subscription.items) == {PLAN.lookup_key: 1, SEAT.lookup_key: 3}


async def test_an_event_of_the_double_verifies_and_parses_with_stripe(
    provider: StripeProvider, double: StripeDouble
) -> None:
    await subscribe(provider, double)
    payload = double.event_payload(double.events[-1])

    verified = stripe.Webhook.construct_event(payload, double.sign(payload, "whsec_one"), "whsec_one")

    assert (verified.type, type(verified.data.object)) == (
        "checkout.session.completed",
        stripe.checkout.Session,
    )


@pytest.mark.parametrize("secret", ["whsec_old", "whsec_new"])
def test_an_event_signed_during_rotation_verifies_with_either_secret(
    double: StripeDouble, secret: str
) -> None:
    payload = double.event_payload({"id": "evt_2", "object": "event", "type": "invoice.paid", "data": {}})
    header = double.sign(payload, "whsec_old", secrets=["whsec_new"])

    assert stripe.Webhook.construct_event(payload, header, secret).id == "evt_2"


def test_an_event_signed_with_another_secret_does_not_verify(double: StripeDouble) -> None:
    payload = double.event_payload({"id": "evt_3", "object": "event", "type": "invoice.paid", "data": {}})

    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload, double.sign(payload, "whsec_other"), "whsec_one")


def credits(*, idempotency_key: str = "credits-1", amount_minor: int = 2000) -> PaymentCheckoutRequest:
    return PaymentCheckoutRequest(
        tenant_id="ten_1",
        reference="cp_1",
        customer_id="",
        customer_email="owner@example.com",
        description="Starter credits (10,000) × 2",
        amount_minor=amount_minor,
        currency="EUR",
        success_url="https://nexus.test/billing/credits/done",
        cancel_url="https://nexus.test/billing/credits",
        idempotency_key=idempotency_key,
        metadata={"tenant_id": "ten_1", "pack_id": "starter", "reference": "not-the-purchase"},
    )


async def test_a_payment_checkout_is_read_back_paid_with_its_reference(
    provider: StripeProvider, double: StripeDouble
) -> None:
    session = await provider.create_payment_checkout(credits())
    events = double.complete_checkout(session.id)

    checkout = await provider.get_checkout(session.id)

    assert (
        [event["type"] for event in events],
        checkout.mode,
        checkout.status,
        checkout.payment_status,
        checkout.reference,
        checkout.amount_total_minor,
        checkout.currency,
        dict(checkout.metadata),
        checkout.subscription_id,
        session.expire_time,
    ) == (
        ["checkout.session.completed"],
        "payment",
        "complete",
        "paid",
        "cp_1",
        2000,
        "EUR",
        {"tenant_id": "ten_1", "pack_id": "starter", "reference": "cp_1"},
        "",
        at(JAN_31 + 86400),
    )


async def test_a_payment_checkout_sends_its_metadata_to_the_payment_intent(
    provider: StripeProvider, double: StripeDouble
) -> None:
    session = await provider.create_payment_checkout(credits())

    order = double._session_orders[session.id]
    assert (order["payment_intent_data"]["metadata"]["reference"], order["line_items"][0]["price_data"]) == (
        "cp_1",
        {"currency": "eur", "unit_amount": "2000", "product_data": {"name": "Starter credits (10,000) × 2"}},
    )


async def test_a_payment_checkout_twice_with_one_key_is_one_session(
    provider: StripeProvider, double: StripeDouble
) -> None:
    first = await provider.create_payment_checkout(credits())
    second = await provider.create_payment_checkout(credits())

    assert (first.id, double.calls("POST /v1/checkout/sessions")) == (second.id, 2)


async def test_a_delayed_payment_is_unpaid_until_it_succeeds(
    provider: StripeProvider, double: StripeDouble
) -> None:
    session = await provider.create_payment_checkout(credits())
    completed = double.complete_checkout(session.id, delayed=True)
    pending = await provider.get_checkout(session.id)

    succeeded = double.succeed_async_payment(session.id)
    paid = await provider.get_checkout(session.id)

    assert (
        [event["type"] for event in completed + succeeded],
        [event["data"]["object"]["payment_status"] for event in completed + succeeded],
        (pending.status, pending.payment_status),
        (paid.status, paid.payment_status, paid.reference),
    ) == (
        ["checkout.session.completed", "checkout.session.async_payment_succeeded"],
        ["unpaid", "paid"],
        ("complete", "unpaid"),
        ("complete", "paid", "cp_1"),
    )


async def test_an_event_of_a_payment_checkout_parses_with_stripe(
    provider: StripeProvider, double: StripeDouble
) -> None:
    session = await provider.create_payment_checkout(credits())
    double.complete_checkout(session.id, delayed=True)
    payload = double.event_payload(double.succeed_async_payment(session.id)[-1])

    verified = stripe.Webhook.construct_event(payload, double.sign(payload, "whsec_one"), "whsec_one")

    assert (verified.type, verified.data.object.client_reference_id) == (
        "checkout.session.async_payment_succeeded",
        "cp_1",
    )
