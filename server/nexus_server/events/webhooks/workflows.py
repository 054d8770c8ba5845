"""What the webhook RPCs do: endpoints, their secrets, the delivery log, redelivery.

Every function acts on the caller's tenant only: an endpoint id of another tenant is
NOT_FOUND, exactly like an id that does not exist. A secret is made here, sealed before it
is stored, and returned once (in `Shown`) to the RPC that made it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from nexus_server.common import ids, pagination
from nexus_server.common.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PreconditionViolation,
)
from nexus_server.common.sealing import Sealer
from nexus_server.db.uow import UnitOfWork
from nexus_server.events import store as log
from nexus_server.events.webhooks import fanout, rules, signing, store
from nexus_server.events.webhooks.rules import DisabledReason, EndpointFields, Range
from nexus_server.events.webhooks.store import AttemptRow, DeliveryRow, EndpointRow

UPDATABLE = ("url", "types", "sources", "enabled", "description")


@dataclass(frozen=True)
class Shown:
    """An endpoint, with its plaintext secret when this call made one ("" otherwise)."""

    endpoint: EndpointRow
    secret: str = ""


@dataclass(frozen=True)
class DeliveryPage:
    deliveries: list[tuple[DeliveryRow, list[AttemptRow]]]
    next_page_token: str
    endpoint_enabled: bool  # a disabled endpoint's deliveries have no next retry to show


@dataclass(frozen=True)
class Redelivered:
    queued_count: int
    first_sequence: int
    last_sequence: int


def _not_found(endpoint_id: str) -> NotFound:
    return NotFound(f"webhook endpoint {endpoint_id[:64]} not found", reason="RESOURCE_NOT_FOUND")


async def _endpoint(
    uow: UnitOfWork, tenant_id: str, endpoint_id: str, *, for_update: bool = False
) -> EndpointRow:
    row = None
    if ids.is_id(endpoint_id, "whk"):
        row = await store.get_endpoint(uow.session, tenant_id, endpoint_id, for_update=for_update)
    if row is None:
        raise _not_found(endpoint_id)
    return row


async def create(uow: UnitOfWork, sealer: Sealer, tenant_id: str, fields: EndpointFields) -> Shown:
    # The tenant's log head row, locked, orders concurrent creates, so the count below is
    # exact (51 cannot slip past the limit); the endpoint starts at that head.
    head = await log.head(uow.session, tenant_id, for_update=True)
    if await store.count_endpoints(uow.session, tenant_id) >= rules.MAX_ENDPOINTS:
        raise FailedPrecondition(
            f"a tenant may have at most {rules.MAX_ENDPOINTS} webhook endpoints",
            reason="WEBHOOK_ENDPOINT_LIMIT_REACHED",
            violations=[
                PreconditionViolation(
                    "LIMIT", "webhook_endpoints", f"at most {rules.MAX_ENDPOINTS} per tenant"
                )
            ],
            metadata={"limit": str(rules.MAX_ENDPOINTS)},
        )
    now = uow.clock.now()
    secret = signing.new_secret()
    endpoint_id = ids.new_id("whk", at=now)
    await store.insert_endpoint(
        uow.session,
        {
            "id": endpoint_id,
            "tenant_id": tenant_id,
            "url": fields.url,
            "types": list(fields.types),
            "sources": list(fields.sources),
            "description": fields.description,
            "enabled": fields.enabled,
            "disabled_reason": DisabledReason.NONE.value,
            "secret": sealer.seal(secret.encode()),
            "previous_secret": None,
            "previous_secret_expire_time": None,
            "cursor": head,  # events published from now on
            "hold_until": None,
            "failing_since": None,
            "lease_owner": None,
            "lease_until": None,
            "create_time": now,
            "update_time": now,
        },
    )
    return Shown(await _endpoint(uow, tenant_id, endpoint_id), secret)


async def get(uow: UnitOfWork, tenant_id: str, endpoint_id: str) -> EndpointRow:
    return await _endpoint(uow, tenant_id, endpoint_id)


async def list_endpoints(
    uow: UnitOfWork, tenant_id: str, size: int, token: str
) -> tuple[list[EndpointRow], str]:
    query = {"tenant_id": tenant_id}
    after = pagination.decode(token, "ListWebhookEndpoints", query, (str,))
    rows = await store.list_endpoints(uow.session, tenant_id, after[0] if after else None, size + 1)
    return pagination.page(rows, size, "ListWebhookEndpoints", query, lambda r: (r.id,))


async def update(
    uow: UnitOfWork, tenant_id: str, endpoint_id: str, fields: EndpointFields, changing: list[str]
) -> EndpointRow:
    row = await _endpoint(uow, tenant_id, endpoint_id, for_update=True)
    if not changing:
        return row
    if row.enabled and ({"types", "sources", "enabled"} & set(changing)):
        # Events published before this change are delivered under the rules they were
        # published under: fan them out now, before the filters or the flag change.
        await fanout.catch_up(uow, row)
    values: dict[str, Any] = {"update_time": uow.clock.now()}
    for name in changing:
        value = getattr(fields, name)
        values[name] = list(value) if isinstance(value, tuple) else value
    if "enabled" in changing and fields.enabled and not row.enabled:
        # Enabled again: from the head on (RedeliverEvents catches up on the gap), with a
        # clean slate for the 5-day failure rule and no hold from before.
        values.update(
            cursor=await uow.head_sequence(tenant_id),
            disabled_reason=DisabledReason.NONE.value,
            failing_since=None,
            hold_until=None,
        )
    await store.update_endpoint(uow.session, row.id, values)
    return await _endpoint(uow, tenant_id, endpoint_id)


async def delete(uow: UnitOfWork, tenant_id: str, endpoint_id: str) -> None:
    row = await _endpoint(uow, tenant_id, endpoint_id, for_update=True)
    await store.delete_endpoint(uow.session, row.id)


async def rotate_secret(
    uow: UnitOfWork, sealer: Sealer, tenant_id: str, endpoint_id: str, grace: timedelta
) -> Shown:
    row = await _endpoint(uow, tenant_id, endpoint_id, for_update=True)
    now = uow.clock.now()
    secret = signing.new_secret()
    await store.update_endpoint(
        uow.session,
        row.id,
        {
            "secret": sealer.seal(secret.encode()),
            # An earlier previous secret is retired at once: only the one just replaced signs on.
            "previous_secret": row.secret if grace > timedelta(0) else None,
            "previous_secret_expire_time": now + grace if grace > timedelta(0) else None,
            "update_time": now,
        },
    )
    return Shown(await _endpoint(uow, tenant_id, endpoint_id), secret)


async def list_deliveries(
    uow: UnitOfWork,
    tenant_id: str,
    endpoint_id: str,
    status: str | None,
    event_id: str,
    size: int,
    token: str,
) -> DeliveryPage:
    row = await _endpoint(uow, tenant_id, endpoint_id)
    query = {"endpoint_id": row.id, "status": status or "", "event_id": event_id}
    before = pagination.decode(token, "ListWebhookDeliveries", query, (str,))
    rows = await store.list_deliveries(
        uow.session,
        row.id,
        status=status,
        event_id=event_id,
        before=before[0] if before else None,
        limit=size + 1,
    )
    shown, next_token = pagination.page(rows, size, "ListWebhookDeliveries", query, lambda r: (r.id,))
    attempts = await store.attempts_of(uow.session, [d.id for d in shown])
    return DeliveryPage([(d, attempts[d.id]) for d in shown], next_token, row.enabled)


async def redeliver(
    uow: UnitOfWork, tenant_id: str, endpoint_id: str, bounds: Range, key: str
) -> Redelivered:
    row = await _endpoint(uow, tenant_id, endpoint_id, for_update=True)
    fingerprint = _fingerprint(bounds)
    if key:
        earlier = await store.redelivery(uow.session, row.id, key)
        if earlier is not None:
            if earlier.fingerprint != fingerprint:
                raise FailedPrecondition(
                    "this idempotency_key was used with a different request", reason="IDEMPOTENCY_KEY_REUSED"
                )
            return Redelivered(
                int(earlier.queued_count), int(earlier.first_sequence), int(earlier.last_sequence)
            )
    if not row.enabled:
        raise FailedPrecondition(
            "the webhook endpoint is disabled: enable it first",
            reason="WEBHOOK_ENDPOINT_DISABLED",
            violations=[
                PreconditionViolation("STATE", f"webhook_endpoints/{row.id}", "the endpoint is disabled")
            ],
        )
    found = await log.page(
        uow.session,
        log.page_query(
            tenant_id,
            flt=fanout.endpoint_filter(row),
            subject="",
            start_time=bounds.start_time,
            end_time=bounds.end_time,
            min_sequence=bounds.min_sequence,
            max_sequence=bounds.max_sequence,
            descending=False,
            after=None,
            limit=rules.MAX_REDELIVERY + 1,
        ),
    )
    if len(found) > rules.MAX_REDELIVERY:
        raise InvalidArgument(
            FieldViolation(
                "min_sequence", f"more than {rules.MAX_REDELIVERY:,} events match: narrow the range"
            ),
            reason="REDELIVERY_RANGE_TOO_LARGE",
            metadata={"limit": str(rules.MAX_REDELIVERY)},
        )
    now = uow.clock.now()
    await store.insert_deliveries(uow.session, [fanout.delivery(row, e, now, redelivery=True) for e in found])
    answer = Redelivered(len(found), found[0].sequence if found else 0, found[-1].sequence if found else 0)
    if key:
        await store.insert_redelivery(
            uow.session,
            {
                "endpoint_id": row.id,
                "idempotency_key": key,
                "fingerprint": fingerprint,
                "queued_count": answer.queued_count,
                "first_sequence": answer.first_sequence,
                "last_sequence": answer.last_sequence,
                "create_time": now,
            },
        )
    return answer


def _fingerprint(bounds: Range) -> str:
    def moment(value: datetime | None) -> str:
        return value.isoformat() if value else ""

    canonical = json.dumps(
        [bounds.min_sequence, bounds.max_sequence, moment(bounds.start_time), moment(bounds.end_time)]
    )
    return hashlib.sha256(canonical.encode()).hexdigest()
