"""Accepting usage records: idempotent, exact, and one outcome per record.

A record's idempotency key is its primary key, inserted in the same transaction as the
record and its rollups: a key is never claimed without its record (OpenMeter #5118) and a
record is never stored without being counted (Lago #637). A batch is judged record by
record, so one bad record costs only itself (Lago rejects the whole batch).

Per batch: repeats within it are settled against their first occurrence; new keys are
inserted in one statement (ON CONFLICT DO NOTHING RETURNING); keys that were already there,
or that a concurrent batch committed first, are read back and are duplicates if their metric
and quantity match, else IDEMPOTENCY_KEY_REUSED. The accepted quantities are added to the
daily and per-period rollups, and a period total that crosses 80% or 100% of its quota
publishes its event, once (usage_quota_alerts), in the same transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from nexus_server.common.errors import FieldViolation
from nexus_server.common.pacing import Pacer
from nexus_server.db.uow import UnitOfWork
from nexus_server.usage import store
from nexus_server.usage.rules import Record, Rejection, day_of
from nexus_server.usage.terms import Enforcement, Terms, TermsSource

# (level, fraction of the included quantity, event type)
THRESHOLDS = (("warning", 0.8, "usage.quota_warning"), ("exceeded", 1.0, "usage.quota_exceeded"))


@dataclass
class Outcome:
    accepted: int = 0
    duplicates: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    # Metrics whose hard-limited quota this batch used up (the exceeded alert it claimed).
    exhausted: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Item:
    """One judged record and its position (request index, or stream-wide index)."""

    index: int
    judged: Record | Rejection


def _reused(index: int, record: Record) -> Rejection:
    return Rejection(
        index,
        record.idempotency_key,
        "IDEMPOTENCY_KEY_REUSED",
        "the idempotency key was already used with a different metric or quantity",
        (FieldViolation(f"records[{index}].idempotency_key", "already used for another record"),),
    )


def _closed(index: int, record: Record) -> Rejection:
    return Rejection(
        index,
        record.idempotency_key,
        "USAGE_PERIOD_CLOSED",
        "the record falls in a billing period that has been invoiced",
        (FieldViolation(f"records[{index}].timestamp", "falls in a closed billing period"),),
    )


class _Periods:
    """The terms of each period the batch's records fall in (at most two: 7 days back)."""

    def __init__(self, uow: UnitOfWork, source: TermsSource, tenant_id: str):
        self._uow, self._source, self._tenant_id = uow, source, tenant_id
        self._known: list[Terms] = []

    async def of(self, when: datetime) -> Terms:
        for terms in self._known:
            if terms.period_start <= when < terms.period_end:
                return terms
        terms = await self._source.terms(self._uow, self._tenant_id, when)
        self._known.append(terms)
        return terms


async def record(uow: UnitOfWork, source: TermsSource, tenant_id: str, items: Sequence[Item]) -> Outcome:
    """Store the batch's valid new records for the tenant; say what became of each."""
    return (await record_tenants(uow, source, {tenant_id: items}))[tenant_id]


async def record_tenants(
    uow: UnitOfWork, source: TermsSource, batches: Mapping[str, Sequence[Item]]
) -> dict[str, Outcome]:
    """`record` for several tenants' batches in one unit of work, with one statement per
    table for all of them: metering flushes a second of every tenant's calls at once, and a
    statement per tenant made its flush dozens of round trips whose stretch of work on the
    event loop and in PostgreSQL delayed every call in flight (issue 18)."""
    pacer = Pacer()  # a flush's thousand records are work enough to hold the loop (pacing.py)
    judged = {
        tenant_id: await _candidates(uow, source, tenant_id, items, pacer)
        for tenant_id, items in sorted(batches.items())
    }
    now = uow.clock.now()
    rows = [(tenant_id, rec) for tenant_id, (_, candidates, _) in judged.items() for _, rec, _ in candidates]
    inserted = await store.insert_new(uow.session, rows, now, pacer)
    daily: dict[store.RollupKey, int] = {}
    period: dict[store.RollupKey, int] = {}
    terms_of: dict[tuple[str, datetime], Terms] = {}
    outcomes: dict[str, Outcome] = {}
    for tenant_id, (outcome, candidates, repeats) in judged.items():
        outcomes[tenant_id] = outcome
        others = [
            r.idempotency_key for _, r, _ in candidates if (tenant_id, r.idempotency_key) not in inserted
        ]
        stored = await store.stored_keys(uow.session, tenant_id, others) if others else {}
        settled: dict[str, str] = {}  # key -> accepted | duplicate | rejected
        async for part in pacer.slices(candidates):
            for item, rec, terms in part:
                key = rec.idempotency_key
                if (tenant_id, key) in inserted:
                    settled[key] = "accepted"
                    outcome.accepted += 1
                    day = (tenant_id, rec.metric, day_of(rec.time))
                    daily[day] = daily.get(day, 0) + rec.quantity
                    slot = (tenant_id, rec.metric, terms.period_start)
                    period[slot] = period.get(slot, 0) + rec.quantity
                    terms_of[(tenant_id, terms.period_start)] = terms
                elif stored.get(key) == (rec.metric, rec.quantity):
                    settled[key] = "duplicate"
                    outcome.duplicates += 1
                else:
                    settled[key] = "rejected"
                    outcome.rejections.append(_reused(item.index, rec))
        _settle_repeats(outcome, repeats, settled)

    await store.add_daily(uow.session, daily)
    after = await store.add_period_totals(uow.session, period)
    for (tenant_id, metric, start), total in after.items():
        terms = terms_of[(tenant_id, start)]
        if await _alert(uow, tenant_id, terms, metric, total - period[(tenant_id, metric, start)], total):
            outcomes[tenant_id].exhausted.append(metric)
    for outcome in outcomes.values():
        outcome.rejections.sort(key=lambda r: r.index)
    return outcomes


# (outcome so far, records that may be new, repeats of a key in the batch with their first)
_Candidates = tuple[Outcome, list[tuple[Item, Record, Terms]], list[tuple[Item, Item]]]


async def _candidates(
    uow: UnitOfWork, source: TermsSource, tenant_id: str, items: Sequence[Item], pacer: Pacer
) -> _Candidates:
    """The tenant's records that may be new (first of their key, in an open period), the
    repeats of a key within the batch, and the outcome so far (rejections)."""
    outcome = Outcome()
    periods = _Periods(uow, source, tenant_id)
    first: dict[str, Item] = {}
    repeats: list[tuple[Item, Item]] = []
    candidates: list[tuple[Item, Record, Terms]] = []
    async for part in pacer.slices(items):
        for item in part:
            judged = item.judged
            if isinstance(judged, Rejection):
                outcome.rejections.append(judged)
                continue
            if judged.idempotency_key in first:
                repeats.append((item, first[judged.idempotency_key]))
                continue
            first[judged.idempotency_key] = item
            terms = await periods.of(judged.time)
            if terms.closed_until is not None and judged.time < terms.closed_until:
                outcome.rejections.append(_closed(item.index, judged))
                continue
            candidates.append((item, judged, terms))
    return outcome, candidates, repeats


def _settle_repeats(outcome: Outcome, repeats: list[tuple[Item, Item]], settled: dict[str, str]) -> None:
    """Repeats of a key within one batch are settled against what became of its first."""
    for item, original in repeats:
        again = item.judged
        assert isinstance(again, Record) and isinstance(original.judged, Record)
        same = (original.judged.metric, original.judged.quantity) == (again.metric, again.quantity)
        if same and settled.get(again.idempotency_key) in ("accepted", "duplicate"):
            outcome.duplicates += 1
        elif same and again.idempotency_key not in settled:  # its first was in a closed period
            outcome.rejections.append(_closed(item.index, again))
        else:
            outcome.rejections.append(_reused(item.index, again))


async def _alert(uow: UnitOfWork, tenant_id: str, terms: Terms, metric: str, before: int, after: int) -> bool:
    """Publish the quota events the total's move crosses; True when it used up a hard limit."""
    quota = terms.quota(metric)
    if quota.enforcement is Enforcement.UNLIMITED or quota.included <= 0:
        return False
    exhausted = False
    for level, fraction, event_type in THRESHOLDS:
        mark = quota.included * fraction
        if before < mark <= after and await store.claim_alert(
            uow.session, tenant_id, metric, terms.period_start, level, uow.clock.now()
        ):
            await uow.append_event(
                event_type,
                {
                    "metric": metric,
                    "used": after,
                    "included": quota.included,
                    "plan_id": terms.plan_id,
                    "period_start_time": terms.period_start.isoformat(),
                    "period_end_time": terms.period_end.isoformat(),
                },
                tenant_id=tenant_id,
                subject=metric,
            )
            exhausted = exhausted or (level == "exceeded" and quota.enforcement is Enforcement.HARD_LIMIT)
    return exhausted
