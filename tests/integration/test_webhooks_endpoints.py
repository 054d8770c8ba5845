"""The webhook RPCs through the real server and real credentials: endpoints and their
secrets, live signed deliveries (verified with the third-party `standardwebhooks`) before
and during a secret rotation, tenant isolation, the delivery log and redelivery."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from nexus.events.v1 import events_service_pb2 as pb
from nexus.events.v1 import events_service_pb2_grpc as rpc
from nexus.events.v1 import webhook_pb2
from nexus_server.app.server import NexusServer, create_server
from nexus_server.events.webhooks.tables import webhook_endpoints
from tests.support import (
    User,
    field_violations,
    issue_key,
    key_metadata,
    make_tenant,
    reason,
    register_user,
    set_roles,
    unique,
)
from tests.webhook_receiver import Receiver

W = webhook_pb2


class Tenant:
    def __init__(self, tenant_id: str, owner: User, publisher: Any):
        self.id = tenant_id
        self.owner = owner
        self.publisher = publisher

    @property
    def admin(self) -> Any:
        return self.owner.metadata(self.id)


async def _tenant(srv: NexusServer, channel: grpc.aio.Channel) -> Tenant:
    owner = await register_user(channel)
    tenant_id = await make_tenant(srv, owner.user_id)
    publisher = key_metadata(await issue_key(srv, tenant_id, ["events:publish"]))
    return Tenant(tenant_id, owner, publisher)


@pytest.fixture
async def tenant(server: tuple[NexusServer, int], channel: grpc.aio.Channel) -> Tenant:
    return await _tenant(server[0], channel)


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> rpc.EventsServiceStub:
    return rpc.EventsServiceStub(channel)


@pytest.fixture
def receiver() -> Any:
    with Receiver() as found:
        yield found


async def _create(stub: rpc.EventsServiceStub, tenant: Tenant, url: str, **fields: Any) -> W.WebhookEndpoint:
    endpoint: W.WebhookEndpoint = await stub.CreateWebhookEndpoint(
        pb.CreateWebhookEndpointRequest(webhook_endpoint=W.WebhookEndpoint(url=url, **fields)),
        metadata=tenant.admin,
    )
    return endpoint


async def _publish(stub: rpc.EventsServiceStub, tenant: Tenant, type: str = "deal.won") -> str:
    event = await stub.PublishEvent(
        pb.PublishEventRequest(type=type, source="crm"), metadata=tenant.publisher
    )
    return str(event.id)


async def _deliveries(
    stub: rpc.EventsServiceStub, tenant: Tenant, endpoint_id: str, count: int
) -> list[W.WebhookDelivery]:
    """The endpoint's deliveries once `count` of them have succeeded."""
    for _ in range(200):
        found = await stub.ListWebhookDeliveries(
            pb.ListWebhookDeliveriesRequest(id=endpoint_id), metadata=tenant.admin
        )
        done = [d for d in found.webhook_deliveries if d.status == W.WEBHOOK_DELIVERY_STATUS_SUCCEEDED]
        if len(done) >= count:
            return list(found.webhook_deliveries)
        await asyncio.sleep(0.05)
    raise AssertionError(f"{count} deliveries did not succeed")


async def test_the_secret_is_shown_once_and_never_stored_plain(
    server: tuple[NexusServer, int], stub: rpc.EventsServiceStub, tenant: Tenant, receiver: Receiver
) -> None:
    made = await _create(stub, tenant, receiver.url(), types=["deal.*"], description="CRM sync")
    assert made.secret.startswith("whsec_") and made.id.startswith("whk_") and made.enabled
    got = await stub.GetWebhookEndpoint(pb.GetWebhookEndpointRequest(id=made.id), metadata=tenant.admin)
    listed = await stub.ListWebhookEndpoints(pb.ListWebhookEndpointsRequest(), metadata=tenant.admin)
    assert got.secret == "" and [e.secret for e in listed.webhook_endpoints] == [""]
    assert (got.url, list(got.types), got.description) == (receiver.url(), ["deal.*"], "CRM sync")
    async with server[0].db.unit_of_work(readonly=True) as uow:
        stored = (await uow.session.execute(select(webhook_endpoints.c.secret))).scalars().all()
    assert all(made.secret.encode() not in s and made.secret[6:].encode() not in s for s in stored)


async def test_deliveries_verify_with_standardwebhooks_before_and_during_a_rotation(
    stub: rpc.EventsServiceStub, tenant: Tenant, receiver: Receiver
) -> None:
    made = await _create(stub, tenant, receiver.url())
    first = await _publish(stub, tenant)
    [request] = await receiver.wait_for(1)
    assert Webhook(made.secret).verify(request.body, request.headers)["id"] == first
    rotated = await stub.RotateWebhookEndpointSecret(
        pb.RotateWebhookEndpointSecretRequest(id=made.id, grace_period=duration_pb2.Duration(seconds=3600)),
        metadata=tenant.admin,
    )
    assert rotated.secret != made.secret and rotated.HasField("previous_secret_expire_time")
    second = await _publish(stub, tenant)
    _, during = await receiver.wait_for(2)
    assert len(during.headers["webhook-signature"].split()) == 2
    for secret in (made.secret, rotated.secret):  # receivers on either secret accept it
        assert Webhook(secret).verify(during.body, during.headers)["id"] == second
    retired = await stub.RotateWebhookEndpointSecret(
        pb.RotateWebhookEndpointSecretRequest(id=made.id), metadata=tenant.admin
    )
    await _publish(stub, tenant)
    *_, after = await receiver.wait_for(3)
    Webhook(retired.secret).verify(after.body, after.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(rotated.secret).verify(after.body, after.headers)


async def test_a_tenant_never_receives_another_tenants_events_nor_sees_its_endpoints(
    server: tuple[NexusServer, int],
    channel: grpc.aio.Channel,
    stub: rpc.EventsServiceStub,
    tenant: Tenant,
    receiver: Receiver,
) -> None:
    other = await _tenant(server[0], channel)
    mine = await _create(stub, tenant, receiver.url("/mine"))
    theirs = await _create(stub, other, receiver.url("/theirs"))
    my_event = await _publish(stub, tenant)
    their_event = await _publish(stub, other)
    await receiver.wait_for(2)
    by_path = {r.path: r.headers["webhook-id"] for r in receiver.requests()}
    assert by_path == {"/mine": my_event, "/theirs": their_event}
    for call in (
        stub.GetWebhookEndpoint(pb.GetWebhookEndpointRequest(id=theirs.id), metadata=tenant.admin),
        stub.DeleteWebhookEndpoint(pb.DeleteWebhookEndpointRequest(id=theirs.id), metadata=tenant.admin),
        stub.ListWebhookDeliveries(pb.ListWebhookDeliveriesRequest(id=theirs.id), metadata=tenant.admin),
        stub.RedeliverEvents(pb.RedeliverEventsRequest(id=theirs.id, min_sequence=1), metadata=tenant.admin),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    listed = await stub.ListWebhookEndpoints(pb.ListWebhookEndpointsRequest(), metadata=tenant.admin)
    assert [e.id for e in listed.webhook_endpoints] == [mine.id]


async def test_members_who_are_not_admins_cannot_manage_endpoints(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel, stub: rpc.EventsServiceStub, tenant: Tenant
) -> None:
    member = await register_user(channel)
    await set_roles(server[0], tenant.id, member.user_id, ["member"])
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.ListWebhookEndpoints(pb.ListWebhookEndpointsRequest(), metadata=member.metadata(tenant.id))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as by_key:
        await stub.ListWebhookEndpoints(pb.ListWebhookEndpointsRequest(), metadata=tenant.publisher)
    assert by_key.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_bad_fields_are_reported_together(stub: rpc.EventsServiceStub, tenant: Tenant) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _create(stub, tenant, "https://example.com/h", types=["bad..type"], description="x" * 300)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(refused.value)) == {
        "webhook_endpoint.types[0]",
        "webhook_endpoint.description",
    }
    with pytest.raises(grpc.aio.AioRpcError) as bad_url:
        await _create(stub, tenant, "ftp://example.com/h")
    assert reason(bad_url.value) == "WEBHOOK_URL_NOT_ALLOWED"
    assert field_violations(bad_url.value) == ["webhook_endpoint.url"]
    with pytest.raises(grpc.aio.AioRpcError) as bad_grace:
        await stub.RotateWebhookEndpointSecret(
            pb.RotateWebhookEndpointSecretRequest(
                id=(await _create(stub, tenant, "https://example.com/h")).id,
                grace_period=duration_pb2.Duration(seconds=8 * 86400),
            ),
            metadata=tenant.admin,
        )
    assert field_violations(bad_grace.value) == ["grace_period"]


async def test_private_and_plain_http_urls_are_refused_outside_development(
    settings: Any, channel: grpc.aio.Channel
) -> None:
    srv, port = await create_server(replace(settings, webhooks_allow_private_urls=False))
    await srv.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as own:
            stub = rpc.EventsServiceStub(own)
            owner = await register_user(own)
            tenant = Tenant(await make_tenant(srv, owner.user_id), owner, ())
            for url in (
                "http://example.com/h",
                "https://127.0.0.1/h",
                "https://10.1.2.3/h",
                "https://169.254.169.254/latest",
                "https://[::1]/h",
                "https://2130706433/h",
                "https://localhost/h",
                "https://user:pw@example.com/h",
            ):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await _create(stub, tenant, url)
                assert reason(refused.value) == "WEBHOOK_URL_NOT_ALLOWED", url
            made = await _create(stub, tenant, "https://hooks.example.com/h")
            with pytest.raises(grpc.aio.AioRpcError) as moved:
                await stub.UpdateWebhookEndpoint(
                    pb.UpdateWebhookEndpointRequest(
                        webhook_endpoint=W.WebhookEndpoint(id=made.id, url="https://10.0.0.1/")
                    ),
                    metadata=tenant.admin,
                )
            assert reason(moved.value) == "WEBHOOK_URL_NOT_ALLOWED"
    finally:
        await srv.stop(grace=1)


async def test_update_changes_only_what_the_mask_names(
    stub: rpc.EventsServiceStub, tenant: Tenant, receiver: Receiver
) -> None:
    made = await _create(stub, tenant, receiver.url(), types=["deal.*"], description="before")
    changed = await stub.UpdateWebhookEndpoint(
        pb.UpdateWebhookEndpointRequest(
            webhook_endpoint=W.WebhookEndpoint(id=made.id, description="after", types=["contact.*"]),
            update_mask=field_mask_pb2.FieldMask(paths=["description"]),
        ),
        metadata=tenant.admin,
    )
    assert (changed.description, list(changed.types)) == ("after", ["deal.*"])
    disabled = await stub.UpdateWebhookEndpoint(
        pb.UpdateWebhookEndpointRequest(webhook_endpoint=W.WebhookEndpoint(id=made.id, enabled=False)),
        metadata=tenant.admin,
    )
    assert not disabled.enabled and disabled.description == "after"
    await _publish(stub, tenant)
    await asyncio.sleep(0.5)
    assert receiver.requests() == []  # disabled: no delivery is made
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.RedeliverEvents(
            pb.RedeliverEventsRequest(id=made.id, min_sequence=1), metadata=tenant.admin
        )
    assert reason(refused.value) == "WEBHOOK_ENDPOINT_DISABLED"
    with pytest.raises(grpc.aio.AioRpcError) as bad_mask:
        await stub.UpdateWebhookEndpoint(
            pb.UpdateWebhookEndpointRequest(
                webhook_endpoint=W.WebhookEndpoint(id=made.id),
                update_mask=field_mask_pb2.FieldMask(paths=["secret"]),
            ),
            metadata=tenant.admin,
        )
    assert reason(bad_mask.value) == "UPDATE_MASK_INVALID"


async def test_the_delivery_log_and_redelivery_with_an_idempotency_key(
    stub: rpc.EventsServiceStub, tenant: Tenant, receiver: Receiver
) -> None:
    made = await _create(stub, tenant, receiver.url())
    sent = [await _publish(stub, tenant) for _ in range(3)]
    deliveries = await _deliveries(stub, tenant, made.id, 3)
    # Newest first by id; deliveries fanned out in one millisecond have ids in no set order.
    assert sorted(d.event_id for d in deliveries) == sorted(sent)
    one = deliveries[0]
    assert one.attempt_count == 1 and one.response_status_code == 204 and not one.redelivery
    assert len(one.attempts) == 1 and one.attempts[0].response_status_code == 204
    assert not one.HasField("next_retry_time")
    sequences = sorted(d.event_sequence for d in deliveries)
    request = pb.RedeliverEventsRequest(
        id=made.id, min_sequence=sequences[0], max_sequence=sequences[1], idempotency_key=unique("redo")
    )
    answer = await stub.RedeliverEvents(request, metadata=tenant.admin)
    again = await stub.RedeliverEvents(request, metadata=tenant.admin)
    assert (answer.queued_count, answer.first_sequence, answer.last_sequence) == (
        2,
        sequences[0],
        sequences[1],
    )
    assert again == answer
    await receiver.wait_for(5)
    assert receiver.event_ids()[3:] == sent[:2]
    with pytest.raises(grpc.aio.AioRpcError) as reused:
        await stub.RedeliverEvents(
            pb.RedeliverEventsRequest(id=made.id, min_sequence=1, idempotency_key=request.idempotency_key),
            metadata=tenant.admin,
        )
    assert reason(reused.value) == "IDEMPOTENCY_KEY_REUSED"
    redone = await stub.ListWebhookDeliveries(
        pb.ListWebhookDeliveriesRequest(id=made.id, event_id=sent[0]), metadata=tenant.admin
    )
    assert sorted(d.redelivery for d in redone.webhook_deliveries) == [False, True]
    page = await stub.ListWebhookDeliveries(
        pb.ListWebhookDeliveriesRequest(id=made.id, page_size=2), metadata=tenant.admin
    )
    rest = await stub.ListWebhookDeliveries(
        pb.ListWebhookDeliveriesRequest(id=made.id, page_size=2, page_token=page.next_page_token),
        metadata=tenant.admin,
    )
    seen = [d.id for d in page.webhook_deliveries] + [d.id for d in rest.webhook_deliveries]
    assert len(set(seen)) == 4 and rest.next_page_token


async def test_a_tenant_may_have_fifty_endpoints_even_when_creates_race(
    stub: rpc.EventsServiceStub, tenant: Tenant
) -> None:
    for n in range(47):
        await _create(stub, tenant, f"https://example.com/{n}")

    async def outcome(n: int) -> str:
        try:
            await _create(stub, tenant, f"https://example.com/race/{n}")
        except grpc.aio.AioRpcError as refused:
            return reason(refused)
        return "ok"

    outcomes = await asyncio.gather(*(outcome(n) for n in range(8)))
    assert sorted(outcomes) == ["WEBHOOK_ENDPOINT_LIMIT_REACHED"] * 5 + ["ok"] * 3
    listed = await stub.ListWebhookEndpoints(
        pb.ListWebhookEndpointsRequest(page_size=100), metadata=tenant.admin
    )
    assert len(listed.webhook_endpoints) == 50


async def test_delete_removes_the_endpoint_and_its_history(
    stub: rpc.EventsServiceStub, tenant: Tenant, receiver: Receiver
) -> None:
    made = await _create(stub, tenant, receiver.url())
    await _publish(stub, tenant)
    await _deliveries(stub, tenant, made.id, 1)
    await stub.DeleteWebhookEndpoint(pb.DeleteWebhookEndpointRequest(id=made.id), metadata=tenant.admin)
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await stub.ListWebhookDeliveries(pb.ListWebhookDeliveriesRequest(id=made.id), metadata=tenant.admin)
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    await _publish(stub, tenant)
    await asyncio.sleep(0.5)
    assert len(receiver.requests()) == 1


async def test_redelivery_by_time_range_and_its_refusals(
    stub: rpc.EventsServiceStub, tenant: Tenant, receiver: Receiver
) -> None:
    made = await _create(stub, tenant, receiver.url(), types=["deal.*"])
    sent = [await _publish(stub, tenant) for _ in range(2)]
    await _publish(stub, tenant, "contact.created")  # not the endpoint's: never replayed
    await _deliveries(stub, tenant, made.id, 2)
    now = timestamp_pb2.Timestamp()
    now.GetCurrentTime()
    window = pb.RedeliverEventsRequest(
        id=made.id,
        start_time=timestamp_pb2.Timestamp(seconds=now.seconds - 3600),
        end_time=timestamp_pb2.Timestamp(seconds=now.seconds + 60),
    )
    answer = await stub.RedeliverEvents(window, metadata=tenant.admin)
    assert answer.queued_count == 2
    await receiver.wait_for(4)
    assert receiver.event_ids() == sent + sent
    for bad, field in (
        (pb.RedeliverEventsRequest(id=made.id), "min_sequence"),
        (pb.RedeliverEventsRequest(id=made.id, min_sequence=5, max_sequence=2), "max_sequence"),
        (
            pb.RedeliverEventsRequest(id=made.id, start_time=window.end_time, end_time=window.start_time),
            "end_time",
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.RedeliverEvents(bad, metadata=tenant.admin)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field_violations(refused.value) == [field]
