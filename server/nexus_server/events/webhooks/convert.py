"""Webhook RPCs' proto <-> domain: requests checked into fields, rows into messages."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from nexus.events.v1 import events_service_pb2 as pb
from nexus.events.v1 import webhook_pb2
from nexus_server.common import pagination, timestamps
from nexus_server.common.errors import FieldViolation, InvalidArgument
from nexus_server.common.fieldmask import fields_to_update
from nexus_server.common.ids import is_id
from nexus_server.common.validation import Violations
from nexus_server.events.webhooks import rules
from nexus_server.events.webhooks.rules import DisabledReason, EndpointFields, Range, Status
from nexus_server.events.webhooks.store import AttemptRow, DeliveryRow, EndpointRow
from nexus_server.events.webhooks.workflows import UPDATABLE, DeliveryPage, Redelivered, Shown

_STATUS = {
    Status.PENDING: webhook_pb2.WEBHOOK_DELIVERY_STATUS_PENDING,
    Status.RETRYING: webhook_pb2.WEBHOOK_DELIVERY_STATUS_RETRYING,
    Status.SUCCEEDED: webhook_pb2.WEBHOOK_DELIVERY_STATUS_SUCCEEDED,
    Status.FAILED: webhook_pb2.WEBHOOK_DELIVERY_STATUS_FAILED,
}
_STATUS_BACK = {number: status for status, number in _STATUS.items()}
_DISABLED = {
    DisabledReason.NONE: webhook_pb2.WEBHOOK_ENDPOINT_DISABLED_REASON_UNSPECIFIED,
    DisabledReason.GONE: webhook_pb2.WEBHOOK_ENDPOINT_DISABLED_REASON_GONE,
    DisabledReason.FAILING: webhook_pb2.WEBHOOK_ENDPOINT_DISABLED_REASON_FAILING,
}


def endpoint_id(value: str, field: str = "id") -> str:
    """The one field the RPC is about: a malformed id fails before anything is read."""
    if not is_id(value, "whk"):
        raise InvalidArgument(FieldViolation(field, "must be a webhook endpoint id (`whk_…`)"))
    return value


def _fields(
    message: webhook_pb2.WebhookEndpoint, bad: Violations, *, allow_private: bool, url: bool
) -> EndpointFields:
    prefix = "webhook_endpoint"
    rules.event_filter(message.types, message.sources, prefix, bad)
    description = rules.description(message.description, f"{prefix}.description", bad)
    if url:
        bad.raise_if_any()  # the request's own mistakes first; the url's reason is its own
        rules.url(message.url, f"{prefix}.url", allow_private=allow_private)
    return EndpointFields(
        url=message.url,
        types=tuple(message.types),
        sources=tuple(message.sources),
        description=description,
        enabled=message.enabled if message.HasField("enabled") else True,
    )


def create_fields(request: pb.CreateWebhookEndpointRequest, *, allow_private: bool) -> EndpointFields:
    with Violations() as bad:
        return _fields(request.webhook_endpoint, bad, allow_private=allow_private, url=True)


def update_fields(
    request: pb.UpdateWebhookEndpointRequest, *, allow_private: bool
) -> tuple[str, EndpointFields, list[str]]:
    message = request.webhook_endpoint
    found = endpoint_id(message.id, "webhook_endpoint.id")
    given = {
        "url": bool(message.url),
        "types": bool(message.types),
        "sources": bool(message.sources),
        "enabled": message.HasField("enabled"),
        "description": bool(message.description),
    }
    changing = fields_to_update(request.update_mask.paths, UPDATABLE, given)
    with Violations() as bad:
        fields = _fields(message, bad, allow_private=allow_private, url="url" in changing)
    return found, fields, changing


def grace_period(request: pb.RotateWebhookEndpointSecretRequest) -> timedelta:
    with Violations() as bad:
        return timestamps.to_timedelta(request.grace_period, "grace_period", rules.MAX_GRACE, bad)


def status_filter(value: int, bad: Violations) -> str | None:
    if value == webhook_pb2.WEBHOOK_DELIVERY_STATUS_UNSPECIFIED:
        return None
    status = _STATUS_BACK.get(value)  # type: ignore[call-overload]
    if status is None:
        bad.add("status", "must be a WebhookDeliveryStatus value")
        return None
    return str(status.value)


def deliveries_query(request: pb.ListWebhookDeliveriesRequest) -> tuple[str, str | None, str, int]:
    found = endpoint_id(request.id)
    with Violations() as bad:
        status = status_filter(request.status, bad)
        if request.event_id and not is_id(request.event_id, "evt"):
            bad.add("event_id", "must be an event id (`evt_…`)")
        size = pagination.page_size(request.page_size, bad)
    return found, status, request.event_id, size


def endpoints_page_size(request: pb.ListWebhookEndpointsRequest) -> int:
    with Violations() as bad:
        return pagination.page_size(request.page_size, bad)


def redelivery(request: pb.RedeliverEventsRequest) -> tuple[str, Range, str]:
    found = endpoint_id(request.id)
    with Violations() as bad:
        start = _time(request, "start_time", bad)
        end = _time(request, "end_time", bad)
        bounds = rules.redelivery_range(Range(request.min_sequence, request.max_sequence, start, end), bad)
        key = rules.idempotency_key(request.idempotency_key, "idempotency_key", bad)
    return found, bounds, key


def _time(
    request: pb.RedeliverEventsRequest, name: Literal["start_time", "end_time"], bad: Violations
) -> datetime | None:
    if not request.HasField(name):
        return None
    return timestamps.to_datetime(getattr(request, name), name, bad)


def endpoint(row: EndpointRow, secret: str = "") -> webhook_pb2.WebhookEndpoint:
    message = webhook_pb2.WebhookEndpoint(
        id=row.id,
        tenant_id=row.tenant_id,
        url=row.url,
        types=row.types,
        sources=row.sources,
        enabled=row.enabled,
        description=row.description,
        secret=secret,
        create_time=timestamps.timestamp(row.create_time),
        update_time=timestamps.timestamp(row.update_time),
        disabled_reason=_DISABLED[DisabledReason(row.disabled_reason)],
    )
    if row.previous_secret is not None and row.previous_secret_expire_time is not None:
        message.previous_secret_expire_time.CopyFrom(timestamps.timestamp(row.previous_secret_expire_time))
    return message


def shown(found: Shown) -> webhook_pb2.WebhookEndpoint:
    return endpoint(found.endpoint, found.secret)


def endpoints_response(rows: list[EndpointRow], token: str) -> pb.ListWebhookEndpointsResponse:
    return pb.ListWebhookEndpointsResponse(
        webhook_endpoints=[endpoint(r) for r in rows], next_page_token=token
    )


def _attempt(row: AttemptRow) -> webhook_pb2.WebhookAttempt:
    message = webhook_pb2.WebhookAttempt(
        attempt_time=timestamps.timestamp(row.attempt_time),
        response_status_code=row.response_status_code,
        response_excerpt=row.response_excerpt,
        error=row.error,
    )
    message.latency.FromTimedelta(timedelta(milliseconds=row.latency_ms))
    if row.next_retry_time is not None:
        message.next_retry_time.CopyFrom(timestamps.timestamp(row.next_retry_time))
    return message


def delivery(
    row: DeliveryRow, attempts: list[AttemptRow], *, endpoint_enabled: bool
) -> webhook_pb2.WebhookDelivery:
    message = webhook_pb2.WebhookDelivery(
        id=row.id,
        webhook_endpoint_id=row.endpoint_id,
        event_id=row.event_id,
        event_type=row.event_type,
        event_sequence=row.event_sequence,
        status=_STATUS[Status(row.status)],
        attempt_count=row.attempt_count,
        response_status_code=row.response_status_code,
        last_error=row.last_error,
        create_time=timestamps.timestamp(row.create_time),
        redelivery=row.redelivery,
        attempts=[_attempt(a) for a in attempts],
    )
    if row.last_attempt_time is not None:
        message.last_attempt_time.CopyFrom(timestamps.timestamp(row.last_attempt_time))
    if row.next_attempt_time is not None and endpoint_enabled and Status(row.status) in rules.OPEN:
        message.next_retry_time.CopyFrom(timestamps.timestamp(row.next_attempt_time))
    return message


def deliveries_response(page: DeliveryPage) -> pb.ListWebhookDeliveriesResponse:
    return pb.ListWebhookDeliveriesResponse(
        webhook_deliveries=[
            delivery(d, a, endpoint_enabled=page.endpoint_enabled) for d, a in page.deliveries
        ],
        next_page_token=page.next_page_token,
    )


def redelivered(answer: Redelivered) -> pb.RedeliverEventsResponse:
    return pb.RedeliverEventsResponse(
        queued_count=answer.queued_count,
        first_sequence=answer.first_sequence,
        last_sequence=answer.last_sequence,
    )
