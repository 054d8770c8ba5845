"""Credits bought through Revolut Merchant (the AI-chat seed's provider), through the real
server and `RevolutProvider` pointed at the Revolut double on loopback, webhooks signed with
Revolut's v1 scheme: an order is credited once on ORDER_COMPLETED however often it is told,
and a bad or stale signature credits nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import grpc
import pytest
from google.api import httpbody_pb2

from nexus.billing.v1 import billing_service_pb2 as pb
from nexus.billing.v1 import billing_service_pb2_grpc as rpc
from nexus_server.app.server import NexusServer, create_server
from nexus_server.config import Settings
from tests.revolut_double import RevolutDouble
from tests.support import User, make_tenant, reason, register_user

SECRET = "revolut_signing_secret_current"
PREVIOUS = "revolut_signing_secret_previous"


@pytest.fixture(scope="module")
def revolut_double() -> Iterator[RevolutDouble]:
    with RevolutDouble.start() as running:
        yield running


@pytest.fixture(scope="module")
async def revolut(
    settings: Settings, revolut_double: RevolutDouble
) -> AsyncIterator[tuple[NexusServer, grpc.aio.Channel]]:
    configured = replace(
        settings,
        credits_provider="revolut",
        revolut_api_key="sk_revolut_test",
        revolut_api_base=revolut_double.api_base,
        revolut_webhook_secrets=(SECRET, PREVIOUS),
    )
    srv, port = await create_server(configured)
    await srv.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        await asyncio.wait_for(channel.channel_ready(), 10)
        yield srv, channel
    await srv.stop(grace=1)
    provider = srv.capabilities.billing.credits
    close = getattr(provider, "aclose", None)
    if close is not None:
        await close()


async def _deliver(
    channel: grpc.aio.Channel, body: dict[str, Any], *, secret: str = SECRET, timestamp_ms: int | None = None
) -> pb.HandleRevolutWebhookResponse:
    payload = RevolutDouble.event_payload(body)
    signature, timestamp = RevolutDouble.sign(payload, secret, timestamp_ms=timestamp_ms)
    reply: pb.HandleRevolutWebhookResponse = await rpc.BillingServiceStub(channel).HandleRevolutWebhook(
        httpbody_pb2.HttpBody(content_type="application/json", data=payload),
        metadata=(("revolut-signature", signature), ("revolut-request-timestamp", timestamp)),
    )
    return reply


async def _balance(channel: grpc.aio.Channel, owner: User, tenant_id: str) -> int:
    reply = await rpc.BillingServiceStub(channel).GetCreditBalance(
        pb.GetCreditBalanceRequest(tenant_id=tenant_id), metadata=owner.metadata(tenant_id)
    )
    return int(reply.balance)


async def test_a_revolut_order_is_credited_once_on_order_completed(
    revolut: tuple[NexusServer, grpc.aio.Channel], revolut_double: RevolutDouble
) -> None:
    srv, channel = revolut
    owner = await register_user(channel)
    tenant_id = await make_tenant(srv, owner.user_id)
    bought = await rpc.BillingServiceStub(channel).PurchaseCredits(
        pb.PurchaseCreditsRequest(tenant_id=tenant_id, credit_package_id="starter"),
        metadata=owner.metadata(tenant_id),
    )
    assert bought.url and bought.credits == 10_000
    body = revolut_double.complete_order(bought.checkout_session_id)
    replies = await asyncio.gather(*(_deliver(channel, body) for _ in range(10)))
    outcomes = sorted(r.outcome for r in replies)
    assert outcomes == [pb.STRIPE_EVENT_OUTCOME_APPLIED] + [pb.STRIPE_EVENT_OUTCOME_DUPLICATE] * 9
    assert await _balance(channel, owner, tenant_id) == 10_000
    rotated = await _deliver(channel, body, secret=PREVIOUS)  # the old secret, during a rotation
    assert rotated.outcome == pb.STRIPE_EVENT_OUTCOME_DUPLICATE


async def test_a_bad_or_stale_revolut_signature_credits_nothing(
    revolut: tuple[NexusServer, grpc.aio.Channel], revolut_double: RevolutDouble
) -> None:
    srv, channel = revolut
    owner = await register_user(channel)
    tenant_id = await make_tenant(srv, owner.user_id)
    bought = await rpc.BillingServiceStub(channel).PurchaseCredits(
        pb.PurchaseCreditsRequest(tenant_id=tenant_id, credit_package_id="starter"),
        metadata=owner.metadata(tenant_id),
    )
    body = revolut_double.complete_order(bought.checkout_session_id)
    stale = int(time.time() * 1000) - 6 * 60 * 1000
    for kwargs in ({"secret": "someone-else"}, {"timestamp_ms": stale}):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _deliver(channel, body, **kwargs)
        assert (caught.value.code(), reason(caught.value)) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "REVOLUT_SIGNATURE_INVALID",
        )
    assert await _balance(channel, owner, tenant_id) == 0


async def test_an_order_not_paid_yet_credits_nothing(
    revolut: tuple[NexusServer, grpc.aio.Channel], revolut_double: RevolutDouble
) -> None:
    srv, channel = revolut
    owner = await register_user(channel)
    tenant_id = await make_tenant(srv, owner.user_id)
    bought = await rpc.BillingServiceStub(channel).PurchaseCredits(
        pb.PurchaseCreditsRequest(tenant_id=tenant_id, credit_package_id="pro"),
        metadata=owner.metadata(tenant_id),
    )
    forged = {"event": "ORDER_COMPLETED", "order_id": bought.checkout_session_id}  # Revolut says pending
    assert (await _deliver(channel, forged)).outcome == pb.STRIPE_EVENT_OUTCOME_STALE
    assert await _balance(channel, owner, tenant_id) == 0
