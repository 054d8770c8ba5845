"""The usage record rules and the quota arithmetic, without a server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from nexus_server.usage import rules
from nexus_server.usage.terms import BUILT_IN_QUOTAS, Enforcement, Quota, month_of

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def judge(**given: object) -> rules.Record | rules.Rejection:
    fields: dict[str, object] = {
        "metric": "ai_tokens",
        "quantity": 5,
        "idempotency_key": "k",
        "time": None,
        "properties": None,
        **given,
    }
    return rules.judge(2, "records[2]", now=NOW, **fields)  # type: ignore[arg-type]


def test_a_good_record_defaults_its_time_to_now() -> None:
    assert judge() == rules.Record("ai_tokens", 5, "k", NOW, None)


@pytest.mark.parametrize(
    ("given", "fields"),
    [
        ({"metric": ""}, ["records[2].metric"]),
        ({"metric": "Tokens"}, ["records[2].metric"]),
        ({"metric": "a" * 65}, ["records[2].metric"]),
        ({"quantity": 0}, ["records[2].quantity"]),
        ({"quantity": rules.MAX_QUANTITY + 1}, ["records[2].quantity"]),
        ({"idempotency_key": ""}, ["records[2].idempotency_key"]),
        ({"idempotency_key": "k" * 129}, ["records[2].idempotency_key"]),
        ({"idempotency_key": "naïve"}, ["records[2].idempotency_key"]),
        ({"properties": {str(i): i for i in range(33)}}, ["records[2].properties"]),
        ({"properties": {"x": "y" * 5000}}, ["records[2].properties"]),
        ({"metric": "", "quantity": -1}, ["records[2].metric", "records[2].quantity"]),
    ],
)
def test_malformed_records_name_every_bad_field(given: dict[str, object], fields: list[str]) -> None:
    rejected = judge(**given)
    assert isinstance(rejected, rules.Rejection)
    assert (rejected.index, rejected.reason) == (2, "INVALID_REQUEST")
    assert [v.field for v in rejected.violations] == fields


@pytest.mark.parametrize("metric", ["api_calls", "nexus.calls", "nexus."])
def test_reserved_metrics_are_refused_unless_nexus_records_them(metric: str) -> None:
    rejected = judge(metric=metric)
    assert isinstance(rejected, rules.Rejection) and rejected.reason == "METRIC_RESERVED"
    assert isinstance(judge(metric="api_calls", allow_reserved=True), rules.Record)


@pytest.mark.parametrize(
    ("offset", "ok"),
    [
        (timedelta(minutes=5), True),
        (timedelta(minutes=5, seconds=1), False),
        (-timedelta(days=7), True),
        (-timedelta(days=7, seconds=1), False),
    ],
)
def test_timestamps_within_five_minutes_ahead_and_seven_days_behind(offset: timedelta, ok: bool) -> None:
    judged = judge(time=NOW + offset)
    assert isinstance(judged, rules.Record) is ok
    if not ok:
        assert isinstance(judged, rules.Rejection) and judged.reason == "TIMESTAMP_OUT_OF_RANGE"


def test_quota_arithmetic_and_cost_rounding() -> None:
    calls = BUILT_IN_QUOTAS["pro"]["api_calls"]
    assert calls.enforcement is Enforcement.BILLED_OVERAGE
    assert (calls.overage(1_000_005), calls.remaining(999_000), calls.cost(5)) == (5, 1000, Decimal("0.01"))
    assert calls.cost(4) == Decimal("0.00")  # 0.004 rounds to nothing
    hard = Quota("ai_tokens", 100, Enforcement.HARD_LIMIT, Decimal(1))
    assert (hard.overage(150), hard.cost(50)) == (50, Decimal("0.00"))  # hard limits bill nothing
    free = Quota("x")
    assert (free.overage(10**12), free.remaining(5)) == (0, 0)


def test_months_begin_at_midnight_utc_and_december_rolls_over() -> None:
    assert month_of(NOW) == (datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    assert month_of(datetime(2026, 2, 28, 23, 59, tzinfo=UTC))[1] == datetime(2026, 3, 1, tzinfo=UTC)
