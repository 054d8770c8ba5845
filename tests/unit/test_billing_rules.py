"""Billing's pure rules: periods counted from an anchor, exact money, Stripe's statuses in
Nexus's words, and the dunning schedule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from nexus_server.billing import rules


def at(day: str) -> datetime:
    return datetime.fromisoformat(day).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("anchor", "moment", "start", "end"),
    [
        ("2026-01-31", "2026-02-15", "2026-01-31", "2026-02-28"),  # a short month keeps its last day
        ("2026-01-31", "2026-03-01", "2026-02-28", "2026-03-31"),  # and the anchor's day comes back
        ("2026-03-10", "2026-03-10", "2026-03-10", "2026-04-10"),  # a period includes its start
        ("2026-03-10", "2026-04-10", "2026-04-10", "2026-05-10"),  # and excludes its end
        ("2026-03-10", "2026-01-05", "2025-12-10", "2026-01-10"),  # before the anchor, counted back
        ("2024-02-29", "2025-03-01", "2025-02-28", "2025-03-29"),  # leap day anchors
    ],
)
def test_monthly_periods_from_an_anchor(anchor: str, moment: str, start: str, end: str) -> None:
    assert rules.period_at(at(anchor), "month", at(moment)) == (at(start), at(end))


def test_yearly_periods_step_twelve_months() -> None:
    assert rules.period_at(at("2026-05-20"), "year", at("2027-06-01")) == (at("2027-05-20"), at("2028-05-20"))


@pytest.mark.parametrize(
    ("overage", "price", "cents"),
    [
        (1235, "0.001", 124),
        (1234, "0.001", 123),
        (1, "0.001", 0),
        (5, "0.001", 1),
        (10**9, "0.001", 100_000_000),
    ],
)
def test_overage_is_exact_and_rounds_half_up_to_the_cent(overage: int, price: str, cents: int) -> None:
    assert rules.overage_minor(overage, Decimal(price)) == cents


def test_proration_is_the_share_of_the_period_left() -> None:
    start, end = at("2026-04-01"), at("2026-05-01")  # 30 days
    assert rules.prorated_minor(3000, start, end, at("2026-04-16")) == 1500
    assert rules.prorated_minor(3000, start, end, at("2026-05-02")) == 0
    assert rules.prorated_minor(3000, start, end, at("2026-03-01")) == 3000


@pytest.mark.parametrize(
    ("stripe", "current", "ours"),
    [
        ("active", None, rules.ACTIVE),
        ("trialing", rules.ACTIVE, rules.TRIALING),
        ("past_due", rules.ACTIVE, rules.PAST_DUE),
        ("unpaid", rules.PAST_DUE, rules.PAST_DUE),
        ("past_due", rules.SUSPENDED, rules.SUSPENDED),  # only a payment lifts our suspension
        ("active", rules.SUSPENDED, rules.ACTIVE),
        ("incomplete_expired", rules.INCOMPLETE, rules.CANCELED),
        ("canceled", rules.ACTIVE, rules.CANCELED),
        ("something_new", None, rules.INCOMPLETE),
    ],
)
def test_stripe_statuses_in_nexus_words(stripe: str, current: str | None, ours: str) -> None:
    assert rules.from_stripe_status(stripe, current) == ours


def test_reminders_go_at_each_step_inside_the_grace_period_once() -> None:
    failed, grace = at("2026-06-01"), timedelta(days=7)
    assert rules.reminder_due(failed, 0, grace, failed)
    assert not rules.reminder_due(failed, 1, grace, failed + timedelta(days=2))
    assert rules.reminder_due(failed, 1, grace, failed + timedelta(days=3))
    assert rules.reminder_due(failed, 2, grace, failed + timedelta(days=6))
    assert not rules.reminder_due(failed, 3, grace, failed + timedelta(days=6, hours=23))
    # A grace period of two days leaves only the first reminder.
    assert not rules.reminder_due(failed, 1, timedelta(days=2), failed + timedelta(days=5))


@pytest.mark.parametrize(
    ("tokens_in", "tokens_out", "rate_in", "rate_out", "credits"),
    [
        (1200, 350, 2500, 10000, 7),  # 6.5 rounds up
        (1_000_000, 0, 2500, 10000, 2500),  # exact: no rounding
        (1, 0, 1, 0, 1),  # a millionth of a credit is still a credit
        (0, 0, 2500, 10000, 0),
        (10**9, 10**9, 10**9, 10**9, 2 * 10**12),  # exact integers, no float anywhere
    ],
)
def test_model_calls_are_priced_exactly_and_rounded_up_once(
    tokens_in: int, tokens_out: int, rate_in: int, rate_out: int, credits: int
) -> None:
    assert rules.credits_for(tokens_in, tokens_out, rate_in, rate_out) == credits
