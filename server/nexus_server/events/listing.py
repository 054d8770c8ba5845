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
from nexus_server.common.errors import FieldViolation, InvalidArgument
from nexus_server.db.uow import StoredEvent, UnitOfWork
from nexus_server.events import store
from nexus_server.events.envelope import subject_problem
from nexus_server.events.filters import Filter, build_filter

DEFAULT_PAGE = 50
MAX_PAGE = 1000
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


def encode_token(query: list[object], last_sequence: int) -> str:
    return pagination.seal("ListEvents", query, last_sequence)


def decode_token(token: str, query: list[object]) -> int:
    """The last sequence a token's page returned; PAGE_TOKEN_INVALID if this server did not
    mint it for this query (pagination.py)."""
    last = pagination.open_token(token, "ListEvents", query)
    if not isinstance(last, int) or isinstance(last, bool) or last < 0:
        raise pagination.invalid()
    return last


def _checked(q: ListQuery) -> tuple[Filter, bool, int]:
    violations: list[FieldViolation] = []
    flt = build_filter(q.types, q.sources, violations)
    problem = subject_problem(q.subject)
    if problem:
        violations.append(FieldViolation("subject", problem))
    if q.start_time and q.end_time and q.end_time <= q.start_time:
        violations.append(FieldViolation("end_time", "must be later than start_time"))
    for name, value in (("min_sequence", q.min_sequence), ("max_sequence", q.max_sequence)):
        if value < 0:
            violations.append(FieldViolation(name, "must not be negative"))
    if q.min_sequence > 0 and q.max_sequence > 0 and q.max_sequence < q.min_sequence:
        violations.append(FieldViolation("max_sequence", "must be at least min_sequence"))
    order = " ".join(q.order_by.split()).lower()
    if order not in _ORDERS:
        violations.append(FieldViolation("order_by", "must be `sequence` or `sequence desc`"))
    if q.page_size < 0:
        violations.append(FieldViolation("page_size", "must not be negative"))
    if violations:
        raise InvalidArgument(violations)
    size = min(q.page_size or DEFAULT_PAGE, MAX_PAGE)
    return flt, _ORDERS[order], size


async def list_events(
    uow: UnitOfWork, *, tenant_id: str, query: ListQuery, hidden: tuple[str, ...] = ()
) -> Page:
    """A page of the tenant's events matching `query`, leaving out Nexus's events of the
    families in `hidden` (what the reader may not see: visibility.py)."""
    flt, descending, size = _checked(query)
    flt = replace(flt, hidden=hidden)
    bound = _query(tenant_id, query, descending)
    after = decode_token(query.page_token, bound) if query.page_token else None
    statement = store.page_query(
        tenant_id,
        flt=flt,
        subject=query.subject,
        start_time=query.start_time,
        end_time=query.end_time,
        min_sequence=query.min_sequence,
        max_sequence=query.max_sequence,
        descending=descending,
        after=after,
        limit=size + 1,
    )
    rows = list(await store.page(uow.session, statement))
    more = len(rows) > size
    rows = rows[:size]
    token = encode_token(bound, rows[-1].sequence) if more else ""
    return Page(rows, token)
