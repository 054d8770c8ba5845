"""Setting and clearing rate-limit overrides: data, applied by every replica within a
second (the revocation feed tells them to reload), no restart."""

from __future__ import annotations

from nexus_server.auth.revocations import Revocations
from nexus_server.common.errors import FieldViolation, InvalidArgument
from nexus_server.db.uow import UnitOfWork
from nexus_server.ratelimit import store

KINDS = ("plan", "tenant", "user")
FEED_KIND = "ratelimit"
MAX_PER_MINUTE = 10_000_000


async def set_override(
    uow: UnitOfWork, revocations: Revocations, kind: str, subject: str, per_minute: int | None
) -> None:
    """Set `kind`/`subject`'s limit in calls per minute; None removes the override."""
    if kind not in KINDS:
        raise InvalidArgument(FieldViolation("kind", f"must be one of {', '.join(KINDS)}"))
    if not subject or len(subject) > 64:
        raise InvalidArgument(FieldViolation("subject", "must be 1 to 64 characters"))
    if per_minute is None:
        await store.delete_override(uow.session, kind, subject)
    elif not 1 <= per_minute <= MAX_PER_MINUTE:
        raise InvalidArgument(FieldViolation("limit_per_minute", f"must be from 1 to {MAX_PER_MINUTE}"))
    else:
        await store.put_override(uow.session, kind, subject, per_minute)
    await revocations.revoke(uow, FEED_KIND, f"{kind}/{subject}", until=uow.clock.now())
