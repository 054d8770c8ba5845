"""Publishing to a tenant's log (idempotently), and reading it back by id."""

from __future__ import annotations

from nexus_server.common.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from nexus_server.common.ids import is_id
from nexus_server.db.uow import StoredEvent, UnitOfWork
from nexus_server.events import envelope, store, visibility
from nexus_server.events.envelope import Draft


async def publish(uow: UnitOfWork, *, tenant_id: str, publisher_key_id: str, draft: Draft) -> StoredEvent:
    """Append `draft` to the tenant's log and return the event; with an idempotency key,
    return the event that key already names (and append nothing) if the envelope matches."""
    envelope.check(draft, uow.clock.now())

    async def append(key: str | None) -> StoredEvent:
        return await uow.append_event(
            draft.type,
            draft.data,
            tenant_id=tenant_id,
            subject=draft.subject,
            source=draft.source,
            idempotency_key=key,
            time=draft.time,
            publisher_api_key_id=publisher_key_id,
        )

    key = draft.idempotency_key
    if not key:
        return await append(None)
    existing = await store.by_idempotency_key(uow.session, tenant_id, key)
    if existing is None:
        appended = await store.append_unless_key_taken(uow, lambda: append(key))
        if appended is not None:
            return appended
        # A concurrent publish with this key committed between our lookup and append.
        existing = await store.by_idempotency_key(uow.session, tenant_id, key)
        if existing is None:  # pragma: no cover - the constraint named some other row
            raise RuntimeError("idempotency key conflict without a stored event")
    if not envelope.same_envelope(
        existing.type,
        existing.source,
        existing.subject,
        existing.time,
        existing.create_time,
        existing.data,
        draft,
    ):
        raise FailedPrecondition(
            "this idempotency_key already names an event with a different envelope",
            reason="IDEMPOTENCY_KEY_REUSED",
        )
    return existing


async def get_event(
    uow: UnitOfWork, *, tenant_id: str, event_id: str, hidden: tuple[str, ...] = ()
) -> StoredEvent:
    """The event, unless it is not there or is among what the reader's `hidden` leaves out
    (visibility.py), which look alike."""
    if not is_id(event_id, "evt"):
        raise InvalidArgument(FieldViolation("id", "must be an event id (`evt_…`)"))
    event = await store.by_id(uow.session, tenant_id, event_id)
    if event is None or visibility.is_hidden(event.type, event.source, hidden):
        raise NotFound(f"no event {event_id} in this tenant")
    return event
