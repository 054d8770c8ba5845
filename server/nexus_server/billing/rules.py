"""Billing's pure rules: billing periods, exact money, what a Stripe status means here, and
the dunning schedule. No database, no grpc: unit-tested on their own.

Periods begin at midnight UTC on the anchor's day of the month (the last day of shorter
months), so each period is a whole number of usage's daily rollups and the quota a period
counts is exactly the days it covers.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from nexus_server.common.validation import Violations

MINOR = Decimal("0.01")

# Nexus's statuses (Subscription.status). `suspended` is ours: dunning ran out.
TRIALING, ACTIVE, INCOMPLETE, PAST_DUE, SUSPENDED, CANCELED = (
    "trialing",
    "active",
    "incomplete",
    "past_due",
    "suspended",
    "canceled",
)
# Statuses whose plan is in force (its quotas and limits apply); INCOMPLETE keeps the plan
# the tenant had before, SUSPENDED is refused at the door anyway.
IN_FORCE = (TRIALING, ACTIVE, PAST_DUE, SUSPENDED)
CHANGEABLE = (TRIALING, ACTIVE)

# Reminder mails while past due, in days after the failed payment (the first at once).
REMINDER_DAYS = (0, 3, 6)


def midnight(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def add_months(anchor: datetime, months: int) -> datetime:
    """`anchor` moved by whole months, keeping its day where the month has it."""
    index = anchor.year * 12 + anchor.month - 1 + months
    year, month = divmod(index, 12)
    day = min(anchor.day, calendar.monthrange(year, month + 1)[1])
    return anchor.replace(year=year, month=month + 1, day=day)


def period_at(anchor: datetime, interval: str, at: datetime) -> tuple[datetime, datetime]:
    """The period, counted from `anchor` (midnight UTC) every month or year, containing `at`.
    Periods before the anchor are counted backwards the same way."""
    step = 12 if interval == "year" else 1
    months = (at.year - anchor.year) * 12 + at.month - anchor.month
    n = months // step
    start = add_months(anchor, n * step)
    while start > at:
        n -= 1
        start = add_months(anchor, n * step)
    while add_months(anchor, (n + 1) * step) <= at:
        n += 1
    return add_months(anchor, n * step), add_months(anchor, (n + 1) * step)


def month_anchor(at: datetime) -> datetime:
    """The free plan's anchor: the first of the month, so its periods are calendar months."""
    return midnight(at).replace(day=1)


def round_minor(amount: Decimal) -> int:
    """An exact amount in the main unit, rounded half up to whole minor units (cents)."""
    return int((amount / MINOR).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def overage_minor(overage: int, unit_price: Decimal) -> int:
    return round_minor(unit_price * overage)


def prorated_minor(amount_minor: int, start: datetime, end: datetime, at: datetime) -> int:
    """The share of a period's price for the time left in it after `at`, half up."""
    total = (end - start).total_seconds()
    left = max((end - max(at, start)).total_seconds(), 0.0)
    if total <= 0:
        return 0
    share = Decimal(amount_minor) * Decimal(int(left)) / Decimal(int(total))
    return int(share.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def from_stripe_status(stripe_status: str, current: str | None) -> str:
    """Nexus's status for a Stripe subscription status. Our own SUSPENDED survives Stripe
    still calling it past_due or unpaid: only a payment (active) lifts it."""
    if stripe_status in ("past_due", "unpaid", "paused"):
        return SUSPENDED if current == SUSPENDED else PAST_DUE
    return {
        "trialing": TRIALING,
        "active": ACTIVE,
        "incomplete": INCOMPLETE,
        "incomplete_expired": CANCELED,
        "canceled": CANCELED,
    }.get(stripe_status, INCOMPLETE)


def reminder_due(past_due_since: datetime, sent: int, grace: timedelta, now: datetime) -> bool:
    """Whether the next dunning reminder is due: steps of REMINDER_DAYS that fall inside the
    grace period, each sent once."""
    steps = [timedelta(days=d) for d in REMINDER_DAYS if timedelta(days=d) < grace]
    return sent < len(steps) and now >= past_due_since + steps[sent]


def seats_for(members: int, included: int) -> int:
    """Seats a per-seat plan bills: one per member, at least the seats the price includes
    and at least one."""
    return max(members, included, 1)


MILLION = 1_000_000


def credits_for(
    input_tokens: int, output_tokens: int, input_per_million: int, output_per_million: int
) -> int:
    """A model call's price in whole credits: exact integer arithmetic, rounded up once
    (CreditRate's formula), so no call is ever free by rounding."""
    total = input_tokens * input_per_million + output_tokens * output_per_million
    return -(-total // MILLION)


# --- what credit requests may carry ------------------------------------------------------------

MAX_CREDITS = 1_000_000_000
MAX_TOKENS = 1_000_000_000
MAX_METADATA_BYTES = 8 * 1024


def idempotency_key(value: str, field: str, bad: Violations, *, required: bool = True) -> str:
    """A key that makes retries safe; optional on the RPCs where an empty key means "every
    call is new" (checkout, ChangePlan, PurchaseCredits)."""
    if not value:
        if required:
            bad.add(field, "is required: 1 to 255 printable ASCII characters")
    elif not (len(value) <= 255 and value.isascii() and value.isprintable()):
        bad.add(field, "must be 1 to 255 printable ASCII characters")
    return value


def credit_amount(value: int, field: str, bad: Violations, *, lo: int = 1) -> int:
    if not lo <= value <= MAX_CREDITS:
        bad.add(field, f"must be from {lo:,} to {MAX_CREDITS:,} credits")
    return value


def note(value: str, field: str, bad: Violations, *, required: bool = False, limit: int = 500) -> str:
    if required and not value.strip():
        bad.add(field, f"is required: 1 to {limit} characters")
    elif len(value) > limit or not value.isprintable():
        bad.add(field, f"must be at most {limit} printable characters")
    return value


def metadata_size(serialised_bytes: int, field: str, bad: Violations) -> None:
    if serialised_bytes > MAX_METADATA_BYTES:
        bad.add(field, "must be at most 8 KiB once serialised as JSON")


def model_usage(
    provider: str, model: str, input_tokens: int, output_tokens: int, field: str, bad: Violations
) -> None:
    if not 0 < len(provider) <= 64 or provider != provider.lower() or not provider.isprintable():
        bad.add(f"{field}.provider", "must be 1 to 64 lowercase characters")
    if not 0 < len(model) <= 128 or not model.isprintable():
        bad.add(f"{field}.model", "must be 1 to 128 printable characters")
    for name, value in (("input_tokens", input_tokens), ("output_tokens", output_tokens)):
        if not 0 <= value <= MAX_TOKENS:
            bad.add(f"{field}.{name}", f"must be from 0 to {MAX_TOKENS:,}")
    if input_tokens <= 0 and output_tokens <= 0:
        bad.add(f"{field}.input_tokens", "at least one of input_tokens and output_tokens must be positive")
