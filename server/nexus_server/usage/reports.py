"""What usage reports: current usage against quota, daily history, quota checks and the
platform-wide overview. Every figure is read from the rollups that ingest.py keeps exact in
the accepting transaction, so each report counts every record acknowledged before it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Protocol

from nexus_server.common.validation import Violations
from nexus_server.db.uow import UnitOfWork
from nexus_server.usage import store
from nexus_server.usage.rules import MAX_QUANTITY, day_of, metric_problem
from nexus_server.usage.terms import Enforcement, Quota, Terms, TermsSource

DAY = timedelta(days=1)
MAX_METRICS = 100


@dataclass(frozen=True)
class MetricReport:
    metric: str
    used: int
    quota: Quota
    projected_used: int
    remaining: int
    overage: int
    overage_cost: Decimal
    projected_overage: int
    projected_overage_cost: Decimal


@dataclass(frozen=True)
class CurrentUsage:
    tenant_id: str
    terms: Terms
    metrics: list[MetricReport]
    as_of: datetime


def _metric_list(values: Sequence[str], field: str, bad: Violations) -> list[str]:
    if len(values) > MAX_METRICS:
        bad.add(field, f"must name at most {MAX_METRICS} metrics")
    for i, name in enumerate(values[:MAX_METRICS]):
        problem = metric_problem(name)
        if problem:
            bad.add(f"{field}[{i}]", problem)
    return sorted(set(values))


def _project(used: int, terms: Terms, now: datetime) -> int:
    # The period's average rate so far, over at least a day, carried to the period's end.
    elapsed = max(now - terms.period_start, DAY)
    left = max(terms.period_end - now, timedelta(0))
    return used + int(used * (left / elapsed))


def _report(metric: str, used: int, terms: Terms, now: datetime) -> MetricReport:
    quota = terms.quota(metric)
    projected = _project(used, terms, now)
    overage, projected_overage = quota.overage(used), quota.overage(projected)
    return MetricReport(
        metric,
        used,
        quota,
        projected,
        quota.remaining(used),
        overage,
        quota.cost(overage),
        projected_overage,
        quota.cost(projected_overage),
    )


async def current_usage(
    uow: UnitOfWork, source: TermsSource, tenant_id: str, metrics: Sequence[str]
) -> CurrentUsage:
    with Violations() as bad:
        wanted = _metric_list(metrics, "metrics", bad)
    now = uow.clock.now()
    terms = await source.terms(uow, tenant_id, now)
    totals = await store.period_totals(uow.session, tenant_id, terms.period_start)
    names = wanted or sorted(set(totals) | set(terms.quotas))
    reports = [_report(m, totals.get(m, 0), terms, now) for m in names]
    return CurrentUsage(tenant_id, terms, reports, now)


@dataclass(frozen=True)
class Series:
    metric: str
    points: list[tuple[datetime, int]]

    @property
    def total(self) -> int:
        return sum(q for _, q in self.points)


@dataclass(frozen=True)
class History:
    start: datetime
    end: datetime
    series: list[Series]
    as_of: datetime


async def history(uow: UnitOfWork, tenant_id: str, days: int, metric: str) -> History:
    with Violations() as bad:
        if not 0 <= days <= 365:
            bad.add("days", "must be from 0 to 365")
        problem = metric_problem(metric) if metric else ""
        if problem:
            bad.add("metric", problem)
    days = days or 30
    now = uow.clock.now()
    end = day_of(now) + DAY
    start = end - days * DAY
    found: dict[str, dict[datetime, int]] = {}
    for name, day, quantity in await store.daily(uow.session, tenant_id, start, end, metric):
        found.setdefault(name, {})[day] = quantity
    if metric:
        found.setdefault(metric, {})
    calendar = [start + i * DAY for i in range(days)]
    series = [Series(m, [(d, found[m].get(d, 0)) for d in calendar]) for m in sorted(found)]
    return History(start, end, series, now)


@dataclass(frozen=True)
class QuotaCheck:
    allowed: bool
    metric: str
    quota: Quota
    used: int
    remaining: int
    overage: int
    reset_time: datetime


async def check_quota(
    uow: UnitOfWork, source: TermsSource, tenant_id: str, metric: str, quantity: int
) -> QuotaCheck:
    with Violations() as bad:
        problem = metric_problem(metric)
        if problem:
            bad.add("metric", problem)
        if not 0 <= quantity <= MAX_QUANTITY:
            bad.add("quantity", f"must be from 0 to {MAX_QUANTITY:,}")
    quantity = quantity or 1
    terms = await source.terms(uow, tenant_id, uow.clock.now())
    used = (await store.period_totals(uow.session, tenant_id, terms.period_start)).get(metric, 0)
    quota = terms.quota(metric)
    overage = quota.overage(used + quantity)
    allowed = quota.enforcement is not Enforcement.HARD_LIMIT or overage == 0
    return QuotaCheck(allowed, metric, quota, used, quota.remaining(used), overage, terms.period_end)


class Brief(Protocol):
    @property
    def tenant_id(self) -> str: ...
    @property
    def display_name(self) -> str: ...
    @property
    def plan_id(self) -> str: ...


# (uow) -> every tenant not deleted: the tenants capability's port (tenants/ports.py).
LiveTenants = Callable[[UnitOfWork], Awaitable[Sequence[Brief]]]


@dataclass(frozen=True)
class Total:
    metric: str
    quantity: int
    tenants: int


@dataclass(frozen=True)
class Ranked:
    tenant_id: str
    display_name: str
    plan_id: str
    quantity: int
    share: float


@dataclass(frozen=True)
class PlanSummary:
    plan_id: str
    tenants: int
    active_tenants: int
    totals: list[Total]


@dataclass(frozen=True)
class Overview:
    start: datetime
    end: datetime
    active_tenants: int
    totals: list[Total]
    top: list[Ranked]
    plans: list[PlanSummary]
    as_of: datetime


def _totals(rows: Sequence[store.TenantMetricTotal]) -> list[Total]:
    sums: dict[str, tuple[int, set[str]]] = {}
    for row in rows:
        quantity, tenants = sums.get(row.metric, (0, set()))
        tenants.add(row.tenant_id)
        sums[row.metric] = (quantity + row.quantity, tenants)
    return [Total(m, q, len(t)) for m, (q, t) in sorted(sums.items())]


async def overview(
    uow: UnitOfWork,
    live_tenants: LiveTenants,
    start: datetime | None,
    end: datetime | None,
    metric: str,
    top_limit: int,
) -> Overview:
    now = uow.clock.now()
    end = end or now
    if start is None:
        start = day_of(end).replace(day=1)
    with Violations() as bad:
        if end <= start:
            bad.add("end_time", "must be after start_time")
        elif end - start > 366 * DAY:
            bad.add("end_time", "the period may span at most 366 days")
        problem = metric_problem(metric) if metric else ""
        if problem:
            bad.add("metric", problem)
        if not 0 <= top_limit <= 100:
            bad.add("top_tenants_limit", "must be from 0 to 100")
    metric, top_limit = metric or "api_calls", top_limit or 10
    # The rollups are daily: the period reported is the whole UTC days that cover it.
    start = day_of(start)
    end = day_of(end) if day_of(end) == end else day_of(end) + DAY
    rows = await store.totals_by_tenant(uow.session, start, end)
    briefs = {b.tenant_id: b for b in await live_tenants(uow)}
    ranked_rows = sorted((r for r in rows if r.metric == metric), key=lambda r: (-r.quantity, r.tenant_id))
    grand = sum(r.quantity for r in ranked_rows)
    top = [
        Ranked(
            r.tenant_id,
            briefs[r.tenant_id].display_name if r.tenant_id in briefs else "",
            briefs[r.tenant_id].plan_id if r.tenant_id in briefs else "",
            r.quantity,
            r.quantity / grand if grand else 0.0,
        )
        for r in ranked_rows[:top_limit]
    ]
    active = {r.tenant_id for r in rows}
    plans: list[PlanSummary] = []
    for plan in sorted({b.plan_id for b in briefs.values()}):
        members = {t for t, b in briefs.items() if b.plan_id == plan}
        plans.append(
            PlanSummary(
                plan,
                len(members),
                len(members & active),
                _totals([r for r in rows if r.tenant_id in members]),
            )
        )
    return Overview(start, end, len(active), _totals(rows), top, plans, now)
