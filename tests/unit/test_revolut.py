"""RevolutProvider against the Revolut Merchant double on loopback, and Revolut webhook verification."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from nexus_server.billing import revolut_webhook
from nexus_server.billing.provider import PaymentCheckoutRequest, ProviderRejected, ProviderUnavailable
from nexus_server.billing.revolut_provider import RevolutProvider
from nexus_server.billing.revolut_webhook import NotAnEvent, SignatureInvalid, verified_event
from tests.revolut_double import RevolutDouble

API_KEY = "sk_test_nexus-revolut"
SECRET = "wsk_current"
NOW_MS = 1_800_000_000_000


@pytest.fixture
def double() -> Iterator[RevolutDouble]:
    with RevolutDouble.start() as double:
        yield double


@pytest.fixture
async def provider(double: RevolutDouble) -> AsyncIterator[RevolutProvider]:
    provider = RevolutProvider(API_KEY, api_base=double.api_base)
    yield provider
    await provider.aclose()


def purchase(
    *, idempotency_key: str = "purchase:ten_1:k1", amount_minor: int = 2000
) -> PaymentCheckoutRequest:
    return PaymentCheckoutRequest(
        tenant_id="ten_1",
        reference="cpu_1",
        customer_id="",
        customer_email="owner@example.com",
        description="Starter credits (10,000) × 2",
        amount_minor=amount_minor,
        currency="eur",
        success_url="https://nexus.test/console/credits?purchase=success",
        cancel_url="https://nexus.test/console/credits?purchase=canceled",
        idempotency_key=idempotency_key,
        metadata={"tenant_id": "ten_1", "credit_package_id": "starter", "quantity": "2"},
    )


# -- the provider ------------------------------------------------------------------------------


async def test_an_order_reads_pending_then_paid_once_completed(
    provider: RevolutProvider, double: RevolutDouble
) -> None:
    session = await provider.create_payment_checkout(purchase())
    pending = await provider.get_checkout(session.id)
    double.complete_order(session.id)

    paid = await provider.get_checkout(session.id)

    assert (pending.mode, pending.status, pending.payment_status) == ("payment", "open", "unpaid")
    assert (
        paid.id,
        paid.status,
        paid.payment_status,
        paid.reference,
        paid.amount_total_minor,
        paid.currency,
        dict(paid.metadata),
    ) == (
        session.id,
        "complete",
        "paid",
        "cpu_1",
        2000,
        "EUR",
        {"tenant_id": "ten_1", "credit_package_id": "starter", "quantity": "2", "reference": "cpu_1"},
    )


async def test_create_sends_the_order_shape_and_offers_it_for_a_day(
    provider: RevolutProvider, double: RevolutDouble
) -> None:
    before = datetime.now(UTC)
    session = await provider.create_payment_checkout(purchase())

    assert double.received == [
        {
            "amount": 2000,
            "currency": "EUR",
            "description": "Starter credits (10,000) × 2",
            "merchant_order_data": {"reference": "cpu_1"},
            "metadata": {
                "tenant_id": "ten_1",
                "credit_package_id": "starter",
                "quantity": "2",
                "reference": "cpu_1",
            },
            "redirect_url": "https://nexus.test/console/credits?purchase=success",
        }
    ]
    assert session.url == double.order(session.id)["checkout_url"]
    assert before + timedelta(hours=24) <= session.expire_time <= datetime.now(UTC) + timedelta(hours=24)


async def test_create_twice_with_one_key_is_one_order(
    provider: RevolutProvider, double: RevolutDouble
) -> None:
    first = await provider.create_payment_checkout(purchase())
    second = await provider.create_payment_checkout(purchase())
    other = await provider.create_payment_checkout(purchase(idempotency_key="purchase:ten_1:k2"))

    assert (second.id, double.calls("POST /api/orders"), other.id != first.id) == (first.id, 3, True)


async def test_a_failed_order_reads_expired_and_unpaid(
    provider: RevolutProvider, double: RevolutDouble
) -> None:
    session = await provider.create_payment_checkout(purchase())
    double.fail_order(session.id)

    failed = await provider.get_checkout(session.id)

    assert (failed.status, failed.payment_status) == ("expired", "unpaid")


async def test_an_outage_is_unavailable(provider: RevolutProvider, double: RevolutDouble) -> None:
    double.outage = True

    with pytest.raises(ProviderUnavailable):
        await provider.create_payment_checkout(purchase())
    with pytest.raises(ProviderUnavailable):
        await provider.get_checkout("any")


async def test_an_order_created_after_an_outage_is_the_same_order(
    provider: RevolutProvider, double: RevolutDouble
) -> None:
    double.outage = True
    with pytest.raises(ProviderUnavailable):
        await provider.create_payment_checkout(purchase())
    double.outage = False

    first = await provider.create_payment_checkout(purchase())
    again = await provider.create_payment_checkout(purchase())

    assert first.id == again.id


async def test_a_stopped_revolut_is_unavailable(provider: RevolutProvider, double: RevolutDouble) -> None:
    double.stop()

    with pytest.raises(ProviderUnavailable) as failure:
        await provider.get_checkout("any")

    assert failure.value.__cause__ is None and failure.value.__suppress_context__


async def test_a_revolut_that_never_answers_times_out_as_unavailable() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts (the backlog), never answers
        provider = RevolutProvider(
            API_KEY, api_base=f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=0.2
        )
        try:
            with pytest.raises(ProviderUnavailable) as failure:
                await provider.get_checkout("any")
        finally:
            await provider.aclose()

    assert "timed out" in str(failure.value)


async def test_a_bad_api_key_is_rejected_without_naming_the_key(double: RevolutDouble) -> None:
    provider = RevolutProvider("rk_nope_secret", api_base=double.api_base)
    try:
        with pytest.raises(ProviderRejected) as refusal:
            await provider.get_checkout("any")
    finally:
        await provider.aclose()

    assert (refusal.value.code, "rk_nope_secret" in str(refusal.value)) == ("unauthenticated", False)


async def test_a_missing_order_is_rejected_as_not_found(provider: RevolutProvider) -> None:
    with pytest.raises(ProviderRejected) as refusal:
        await provider.get_checkout("00000000-0000-0000-0000-000000000000")

    assert refusal.value.code == "not_found"


async def test_an_invalid_order_is_rejected_with_revolut_s_code(provider: RevolutProvider) -> None:
    with pytest.raises(ProviderRejected) as refusal:
        await provider.create_payment_checkout(purchase(amount_minor=0))

    assert (refusal.value.code, "HTTP 400" in str(refusal.value)) == ("bad_request", True)


async def test_an_order_id_cannot_reach_another_path(
    provider: RevolutProvider, double: RevolutDouble
) -> None:
    with pytest.raises(ProviderRejected):
        await provider.get_checkout("../orders")
    for bare in ("", ".", ".."):
        with pytest.raises(ProviderRejected) as refusal:
            await provider.get_checkout(bare)
        assert refusal.value.code == "invalid_order_id"

    assert double.calls("GET /api/orders/{id}") == 1


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (429, b'{"code": "too_many_requests"}', ProviderUnavailable),
        (500, b"oops", ProviderUnavailable),
        (502, b"", ProviderUnavailable),
        (200, b"<html>not json</html>", ProviderUnavailable),
        (200, b"[1, 2]", ProviderUnavailable),
        (422, b'{"code": "invalid_state", "message": "Order is not pending"}', ProviderRejected),
        (403, b"forbidden", ProviderRejected),
    ],
)
async def test_answers_map_to_the_port_s_errors(status: int, body: bytes, error: type[Exception]) -> None:
    provider = RevolutProvider(API_KEY)
    await provider._client.aclose()
    provider._client = httpx.AsyncClient(
        base_url="https://merchant.revolut.test",
        transport=httpx.MockTransport(lambda request: httpx.Response(status, content=body)),
    )
    try:
        with pytest.raises(error):
            await provider.get_checkout("any")
    finally:
        await provider.aclose()


async def test_requests_carry_the_key_and_the_pinned_version() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"id": "ord_1", "state": "pending", "amount": 5, "currency": "eur"})

    provider = RevolutProvider(API_KEY, api_base="https://merchant.revolut.test/")
    await provider._client.aclose()
    provider._client = httpx.AsyncClient(
        base_url="https://merchant.revolut.test",
        headers=provider._client.headers,
        transport=httpx.MockTransport(answer),
    )
    try:
        checkout = await provider.get_checkout("ord_1")
    finally:
        await provider.aclose()

    assert (
        str(seen[0].url),
        seen[0].headers["Authorization"],
        seen[0].headers["Revolut-Api-Version"],
        checkout.currency,
    ) == ("https://merchant.revolut.test/api/orders/ord_1", f"Bearer {API_KEY}", "2024-09-01", "EUR")


# -- webhooks ----------------------------------------------------------------------------------


def signed(
    body: bytes, secret: str = SECRET, *, timestamp_ms: int = NOW_MS, secrets: tuple[str, ...] = ()
) -> tuple[bytes, str, str]:
    signature, timestamp = RevolutDouble.sign(body, secret, timestamp_ms=timestamp_ms, secrets=secrets)
    return body, signature, timestamp


COMPLETED = RevolutDouble.event_payload(
    {
        "event": "ORDER_COMPLETED",
        "order_id": "6516e61c-d279-a454-a837-bc52ce55ed49",
        "merchant_order_ext_ref": "cpu_1",
    }
)


def test_a_signed_event_verifies() -> None:
    event = verified_event(*signed(COMPLETED), [SECRET], now_ms=NOW_MS + 1000)

    assert event == {
        "event": "ORDER_COMPLETED",
        "order_id": "6516e61c-d279-a454-a837-bc52ce55ed49",
        "merchant_order_ext_ref": "cpu_1",
    }


async def test_the_double_s_webhook_round_trips(provider: RevolutProvider, double: RevolutDouble) -> None:
    session = await provider.create_payment_checkout(purchase())
    body = double.event_payload(double.complete_order(session.id))
    signature, timestamp = double.sign(body, SECRET)

    event = verified_event(body, signature, timestamp, [SECRET])

    assert (event["order_id"], event["merchant_order_ext_ref"]) == (session.id, "cpu_1")


@pytest.mark.parametrize("configured", [["wsk_old"], ["wsk_new"], ["wsk_new", "wsk_old"]])
def test_an_event_signed_during_rotation_verifies_with_either_secret(configured: list[str]) -> None:
    body, signature, timestamp = signed(COMPLETED, "wsk_old", secrets=("wsk_new",))

    assert verified_event(body, signature, timestamp, configured, now_ms=NOW_MS)["event"] == "ORDER_COMPLETED"


def test_nexus_may_hold_two_secrets_while_it_rotates() -> None:
    body, signature, timestamp = signed(COMPLETED, "wsk_new")

    assert verified_event(body, signature, timestamp, ["wsk_old", "wsk_new"], now_ms=NOW_MS)["event"]


def test_one_matching_value_among_several_verifies() -> None:
    body, signature, timestamp = signed(COMPLETED)

    header = f"v1={'0' * 64}, v0=deadbeef,v1={signature.removeprefix('v1=').upper()}"

    assert verified_event(body, header, timestamp, [SECRET], now_ms=NOW_MS)["event"] == "ORDER_COMPLETED"


def test_an_event_signed_with_another_secret_does_not_verify() -> None:
    with pytest.raises(SignatureInvalid) as refusal:
        verified_event(*signed(COMPLETED, "wsk_other"), [SECRET], now_ms=NOW_MS)

    assert SECRET not in str(refusal.value) and "wsk_other" not in str(refusal.value)


def test_a_changed_body_does_not_verify() -> None:
    _, signature, timestamp = signed(COMPLETED)

    with pytest.raises(SignatureInvalid):
        verified_event(COMPLETED.replace(b"cpu_1", b"cpu_2"), signature, timestamp, [SECRET], now_ms=NOW_MS)


def test_a_timestamp_is_part_of_the_signature() -> None:
    body, signature, _ = signed(COMPLETED)

    with pytest.raises(SignatureInvalid):
        verified_event(body, signature, str(NOW_MS + 1), [SECRET], now_ms=NOW_MS)


@pytest.mark.parametrize("skew_ms", [-300_001, 300_001, 3_600_000])
def test_a_stale_or_future_timestamp_does_not_verify(skew_ms: int) -> None:
    with pytest.raises(SignatureInvalid):
        verified_event(*signed(COMPLETED), [SECRET], now_ms=NOW_MS + skew_ms)


@pytest.mark.parametrize("skew_ms", [-300_000, 0, 300_000])
def test_a_timestamp_within_five_minutes_verifies(skew_ms: int) -> None:
    assert verified_event(*signed(COMPLETED), [SECRET], now_ms=NOW_MS + skew_ms)["event"] == "ORDER_COMPLETED"


def test_the_tolerance_is_the_caller_s() -> None:
    with pytest.raises(SignatureInvalid):
        verified_event(*signed(COMPLETED), [SECRET], now_ms=NOW_MS + 2000, tolerance_ms=1000)


@pytest.mark.parametrize(
    ("signature", "timestamp", "secrets"),
    [
        ("", str(NOW_MS), [SECRET]),
        ("v2=abc", str(NOW_MS), [SECRET]),
        ("v1=é", str(NOW_MS), [SECRET]),
        ("v1=00", "", [SECRET]),
        ("v1=00", "1.8e12", [SECRET]),
        ("v1=00", "-1", [SECRET]),
        ("v1=00", str(NOW_MS), []),
        ("v1=00", str(NOW_MS), [""]),
    ],
)
def test_malformed_headers_or_no_secret_do_not_verify(
    signature: str, timestamp: str, secrets: list[str]
) -> None:
    with pytest.raises(SignatureInvalid):
        verified_event(COMPLETED, signature, timestamp, secrets, now_ms=NOW_MS)


def test_the_verification_uses_the_documented_string() -> None:
    """The scheme spelled out independently of the double: HMAC-SHA256 of `v1.<ms>.<body>`."""
    import hashlib
    import hmac

    body = b'{"event":"ORDER_COMPLETED","order_id":"o1"}'
    digest = hmac.new(SECRET.encode(), b"v1.%d." % NOW_MS + body, hashlib.sha256).hexdigest()

    assert verified_event(body, f"v1={digest}", str(NOW_MS), [SECRET], now_ms=NOW_MS)["order_id"] == "o1"


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"\xff\xfe",
        b"[]",
        b'"ORDER_COMPLETED"',
        b'{"event": "ORDER_COMPLETED"}',
        b'{"order_id": "o1"}',
        b'{"event": 1, "order_id": "o1"}',
        b'{"event": "ORDER_COMPLETED", "order_id": null}',
        b'{"event": "ORDER_COMPLETED", "order_id": ""}',
    ],
)
def test_a_signed_body_that_is_not_an_event_is_refused(body: bytes) -> None:
    with pytest.raises(NotAnEvent):
        verified_event(*signed(body), [SECRET], now_ms=NOW_MS)


def test_both_refusals_are_webhook_errors() -> None:
    assert issubclass(SignatureInvalid, revolut_webhook.WebhookError)
    assert issubclass(NotAnEvent, revolut_webhook.WebhookError)
