"""ListEvents: the audit log, filtered, a page at a time, with tokens bound to their query.

A page token carries the last sequence returned, sealed to the query (filters and order, not
the page size) by common/pagination.py, so a token replayed against another query, or forged,
is refused with PAGE_TOKEN_INVALID instead of silently skipping events. Paging is keyset on sequence, so
events appended meanwhile never shift a page.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

from nexus_server.common import pagination
from nexus_server.common.validation import Violations
from nexus_server.db.uow import StoredEvent, UnitOfWork
from nexus_server.events import store
from nexus_server.events.envelope import subject_problem
from nexus_server.events.filters import Filter, build_filter

_ORDERS = {"": False, "sequence": False, "sequence asc": False, "sequence desc": True}


@dataclass(frozen=True)
class ListQuery:
    types: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    subject: str = ""
    start_time: datetime | None = None
    end_time: datetime | None = None
    min_sequence: int = 0
    max_sequence: int = 0
    order_by: str = ""
    page_size: int = 0
    page_token: str = ""


@dataclass(frozen=True)
class Page:
    events: list[StoredEvent]
    next_page_token: str


def _query(tenant_id: str, q: ListQuery, descending: bool) -> list[object]:
    """What a page token is bound to: filters and order, not the page size."""
    return [
        tenant_id,
        sorted(set(q.types)),
        sorted(set(q.sources)),
        q.subject,
        q.start_time.isoformat() if q.start_time else None,
        q.end_time.isoformat() if q.end_time else None,
        q.min_sequence,
        q.max_sequence,
        descending,
    ]


def _checked(q: ListQuery) -> tuple[Filter, bool, int]:
    with Violations() as bad:
        flt = build_filter(q.types, q.sources, bad)
        problem = subject_problem(q.subject)
        if problem:
            bad.add("subject", problem)
        if q.start_time and q.end_time and q.end_time <= q.start_time:
            bad.add("end_time", "must be later than start_time")
        for name, value in (("min_sequence", q.min_sequence), ("max_sequence", q.max_sequence)):
            if value < 0:
                bad.add(name, "must not be negative")
        if q.min_sequence > 0 and q.max_sequence > 0 and q.max_sequence < q.min_sequence:
            bad.add("max_sequence", "must be at least min_sequence")
        order = " ".join(q.order_by.split()).lower()
        if order not in _ORDERS:
            bad.add("order_by", "must be `sequence` or `sequence desc`")
        size = pagination.page_size(q.page_size, bad)
    return flt, _ORDERS[order], size


async def list_events(
    uow: UnitOfWork, *, tenant_id: str, query: ListQuery, hidden: tuple[str, ...] = ()
) -> Page:
    """A page of the tenant's events matching `query`, leaving out Nexus's events of the
    families in `hidden` (what the reader may not see: visibility.py)."""
    flt, descending, size = _checked(query)
    flt = replace(flt, hidden=hidden)
    bound = _query(tenant_id, query, descending)
    after = pagination.decode(query.page_token, "ListEvents", bound, (int,))
    statement = store.page_query(
        tenant_id,
        flt=flt,
        subject=query.subject,
        start_time=query.start_time,
        end_time=query.end_time,
        min_sequence=query.min_sequence,
        max_sequence=query.max_sequence,
        descending=descending,
        after=after[0] if after else None,
        limit=size + 1,
    )
    rows, token = pagination.page(
        list(await store.page(uow.session, statement)), size, "ListEvents", bound, lambda e: [e.sequence]
    )
    return Page(rows, token)
