"""Proto <-> usage domain: requests into judged records and queries, reports into replies."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal

from google.type import money_pb2

from nexus.usage.v1 import (
    endpoint_stats_pb2,
    metric_usage_pb2,
    usage_history_pb2,
    usage_overview_pb2,
    usage_record_pb2,
)
from nexus.usage.v1 import usage_service_pb2 as pb
from nexus_server.common import structs, timestamps
from nexus_server.common.errors import FieldViolation, InvalidArgument
from nexus_server.common.validation import Violations
from nexus_server.usage import reports, rules
from nexus_server.usage.endpoints import EndpointReport
from nexus_server.usage.ingest import Item, Outcome
from nexus_server.usage.terms import Enforcement, Quota

_ENFORCEMENT = {
    Enforcement.UNLIMITED: metric_usage_pb2.QUOTA_ENFORCEMENT_UNLIMITED,
    Enforcement.HARD_LIMIT: metric_usage_pb2.QUOTA_ENFORCEMENT_HARD_LIMIT,
    Enforcement.BILLED_OVERAGE: metric_usage_pb2.QUOTA_ENFORCEMENT_BILLED_OVERAGE,
}


def check_batch(records: Sequence[usage_record_pb2.UsageRecord]) -> None:
    """The message-level rules: 1 to 1,000 records (else nothing of the message is kept)."""
    if len(records) > rules.MAX_RECORDS:
        raise InvalidArgument(
            FieldViolation("records", f"must hold at most {rules.MAX_RECORDS} records, not {len(records)}"),
            reason="TOO_MANY_RECORDS",
        )
    with Violations() as bad:
        if not records:
            bad.add("records", "must hold at least one record")


def items(records: Sequence[usage_record_pb2.UsageRecord], now: datetime, offset: int = 0) -> list[Item]:
    """Each record judged on its own; `offset` numbers a stream's records across messages."""
    judged: list[Item] = []
    for i, message in enumerate(records):
        index = offset + i
        field = f"records[{index}]"
        bad = Violations()
        when = (
            timestamps.to_datetime(message.timestamp, f"{field}.timestamp", bad)
            if message.HasField("timestamp")
            else None
        )
        properties = None
        if message.HasField("properties"):
            try:
                properties = structs.struct_to_dict(message.properties)
            except structs.NotJson as error:
                bad.add(f"{field}.properties", str(error))
        if bad:
            key = message.idempotency_key[: rules.MAX_KEY]
            judged.append(
                Item(
                    index,
                    rules.Rejection(index, key, "INVALID_REQUEST", "the record is malformed", bad.found),
                )
            )
            continue
        judged.append(
            Item(
                index,
                rules.judge(
                    index,
                    field,
                    metric=message.metric,
                    quantity=message.quantity,
                    idempotency_key=message.idempotency_key,
                    time=when,
                    properties=properties,
                    now=now,
                ),
            )
        )
    return judged


def rejection(r: rules.Rejection) -> usage_record_pb2.UsageRecordRejection:
    message = usage_record_pb2.UsageRecordRejection(
        index=r.index, idempotency_key=r.idempotency_key, reason=r.reason, message=r.message
    )
    for v in r.violations:
        message.field_violations.add(field=v.field, description=v.description)
    return message


def record_response(outcome: Outcome) -> pb.RecordUsageResponse:
    return pb.RecordUsageResponse(
        accepted=outcome.accepted,
        duplicates=outcome.duplicates,
        rejected=len(outcome.rejections),
        rejections=[rejection(r) for r in outcome.rejections],
    )


def money(amount: Decimal, currency: str) -> money_pb2.Money:
    units = int(amount)
    nanos = int((amount - units) * 1_000_000_000)
    return money_pb2.Money(currency_code=currency, units=units, nanos=nanos)


def _period(start: datetime, end: datetime) -> metric_usage_pb2.UsagePeriod:
    return metric_usage_pb2.UsagePeriod(
        start_time=timestamps.timestamp(start), end_time=timestamps.timestamp(end)
    )


def _metric(
    m: reports.MetricReport, period: metric_usage_pb2.UsagePeriod, currency: str
) -> metric_usage_pb2.MetricUsage:
    quota: Quota = m.quota
    billed = quota.enforcement is Enforcement.BILLED_OVERAGE
    message = metric_usage_pb2.MetricUsage(
        metric=m.metric,
        period=period,
        used=m.used,
        included=0 if quota.enforcement is Enforcement.UNLIMITED else quota.included,
        remaining=m.remaining,
        enforcement=_ENFORCEMENT[quota.enforcement],
        overage=m.overage,
        overage_cost=money(m.overage_cost, currency),
        projected_used=m.projected_used,
        projected_overage=m.projected_overage,
        projected_overage_cost=money(m.projected_overage_cost, currency),
    )
    if billed:
        message.overage_unit_price.CopyFrom(money(quota.overage_unit_price, currency))
    return message


def current_usage(report: reports.CurrentUsage) -> pb.GetCurrentUsageResponse:
    terms = report.terms
    period = _period(terms.period_start, terms.period_end)
    return pb.GetCurrentUsageResponse(
        tenant_id=report.tenant_id,
        plan_id=terms.plan_id,
        period=period,
        metrics=[_metric(m, period, terms.currency) for m in report.metrics],
        as_of_time=timestamps.timestamp(report.as_of),
    )


def history(report: reports.History) -> pb.GetUsageHistoryResponse:
    return pb.GetUsageHistoryResponse(
        period=_period(report.start, report.end),
        series=[
            usage_history_pb2.UsageSeries(
                metric=s.metric,
                total=s.total,
                points=[
                    usage_history_pb2.DailyUsage(start_time=timestamps.timestamp(d), quantity=q)
                    for d, q in s.points
                ],
            )
            for s in report.series
        ],
        as_of_time=timestamps.timestamp(report.as_of),
    )


def quota_check(check: reports.QuotaCheck) -> pb.CheckQuotaResponse:
    unlimited = check.quota.enforcement is Enforcement.UNLIMITED
    return pb.CheckQuotaResponse(
        allowed=check.allowed,
        metric=check.metric,
        limit=0 if unlimited else check.quota.included,
        used=check.used,
        remaining=check.remaining,
        enforcement=_ENFORCEMENT[check.quota.enforcement],
        overage=check.overage,
        reset_time=timestamps.timestamp(check.reset_time),
    )


def _optional_time(request: object, name: str, bad: Violations) -> datetime | None:
    if not request.HasField(name):  # type: ignore[attr-defined]
        return None
    return timestamps.to_datetime(getattr(request, name), name, bad)


def window(
    request: pb.GetEndpointStatsRequest | pb.GetUsageOverviewRequest,
) -> tuple[datetime | None, datetime | None]:
    """The request's `start_time` and `end_time`, None where unset (the workflow's defaults)."""
    with Violations() as bad:
        return _optional_time(request, "start_time", bad), _optional_time(request, "end_time", bad)


def _totals(totals: Iterable[reports.Total]) -> list[usage_overview_pb2.MetricTotal]:
    return [
        usage_overview_pb2.MetricTotal(metric=t.metric, quantity=t.quantity, tenant_count=t.tenants)
        for t in totals
    ]


def overview(report: reports.Overview) -> pb.GetUsageOverviewResponse:
    return pb.GetUsageOverviewResponse(
        period=_period(report.start, report.end),
        active_tenant_count=report.active_tenants,
        totals=_totals(report.totals),
        top_tenants=[
            usage_overview_pb2.TenantUsageSummary(
                tenant_id=r.tenant_id,
                tenant_display_name=r.display_name,
                plan_id=r.plan_id,
                quantity=r.quantity,
                share=r.share,
            )
            for r in report.top
        ],
        plans=[
            usage_overview_pb2.PlanUsageSummary(
                plan_id=p.plan_id,
                tenant_count=p.tenants,
                active_tenant_count=p.active_tenants,
                totals=_totals(p.totals),
            )
            for p in report.plans
        ],
        as_of_time=timestamps.timestamp(report.as_of),
    )


def endpoint_stats(report: EndpointReport) -> pb.GetEndpointStatsResponse:
    return pb.GetEndpointStatsResponse(
        period=_period(report.start, report.end),
        total_calls=report.total_calls,
        total_errors=report.total_errors,
        endpoints=[
            endpoint_stats_pb2.EndpointStats(
                method=e.method,
                project=e.project,
                calls=e.calls,
                errors=e.errors,
                calls_by_code=e.calls_by_code,
                p50_latency=timestamps.duration(e.p50),
                p95_latency=timestamps.duration(e.p95),
                p99_latency=timestamps.duration(e.p99),
            )
            for e in report.endpoints
        ],
        as_of_time=timestamps.timestamp(report.as_of),
    )
