"""What webhook endpoints may hold, and what an attempt's answer means for the next one.

The retry schedule is the Standard Webhooks one (what Svix sends): an attempt at once,
then after 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h and 24 h, each ±10% so a fleet
of receivers coming back is not hit in lockstep, and never sooner than a `Retry-After` the
endpoint sent (capped at a day). Answers fall in four kinds:

- SUCCEEDED: 2xx. The delivery is done and the endpoint is healthy again.
- UNREACHABLE: no answer, a timeout, 408, 429 or 5xx. The endpoint cannot take events now,
  so the whole endpoint is held until the retry: later events wait behind this one and
  arrive in order once it is back (svix-webhooks #1844's stalls came from losing track of
  that wait; here it is a column the sender reads every round).
- REFUSED: any other answer (3xx, since redirects are not followed; 4xx). The endpoint is
  up but will not take this event: it is retried on its own schedule and the rest go on,
  so one poison event never blocks an endpoint for three days.
- GONE: 410. The receiver says it no longer exists; the endpoint is disabled.

An endpoint whose attempts have all failed for five days is disabled too.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from nexus_server.common import outbound
from nexus_server.common.errors import FieldViolation, InvalidArgument
from nexus_server.common.validation import Violations
from nexus_server.events.envelope import key_problem
from nexus_server.events.filters import Filter, build_filter

MAX_ENDPOINTS = 50
MAX_DESCRIPTION = 256
MAX_REDELIVERY = 10_000
MAX_GRACE = timedelta(days=7)
MAX_EXCERPT = 512
MAX_ERROR = 1024
RETENTION = timedelta(days=30)
DISABLE_AFTER = timedelta(days=5)
MAX_RETRY_AFTER = timedelta(days=1)
JITTER = 0.1
# The wait before each attempt after the first; len + 1 is the number of attempts.
SCHEDULE: tuple[timedelta, ...] = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=14),
    timedelta(hours=20),
    timedelta(hours=24),
)
MAX_ATTEMPTS = len(SCHEDULE) + 1

_RANDOM = random.Random()  # its own: jitter must not disturb the global state tests seed


class Status(enum.StrEnum):
    PENDING = "pending"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


OPEN = (Status.PENDING, Status.RETRYING)


class DisabledReason(enum.StrEnum):
    NONE = ""  # enabled, or a person disabled it
    GONE = "gone"
    FAILING = "failing"


class Verdict(enum.Enum):
    SUCCEEDED = "succeeded"
    UNREACHABLE = "unreachable"
    REFUSED = "refused"
    GONE = "gone"


@dataclass(frozen=True)
class Outcome:
    """What one HTTP attempt got: a status code (0: no response), how long it took, the
    start of the body, why it failed (for people), and any Retry-After it asked for."""

    status_code: int
    latency: timedelta
    excerpt: str = ""
    error: str = ""
    retry_after: timedelta | None = None


def verdict(outcome: Outcome) -> Verdict:
    code = outcome.status_code
    if 200 <= code < 300:
        return Verdict.SUCCEEDED
    if code == 410:
        return Verdict.GONE
    if code == 0 or code in (408, 429) or code >= 500:
        return Verdict.UNREACHABLE
    return Verdict.REFUSED


def next_attempt(
    attempts_made: int,
    outcome: Outcome,
    now: datetime,
    rand: Callable[[], float] = _RANDOM.random,
) -> datetime | None:
    """When to try again after `attempts_made` failed attempts, or None when that was the
    last one."""
    if attempts_made >= MAX_ATTEMPTS:
        return None
    wait = SCHEDULE[attempts_made - 1] * (1 + JITTER * (2 * rand() - 1))
    if outcome.retry_after is not None:
        wait = max(wait, min(outcome.retry_after, MAX_RETRY_AFTER))
    return now + wait


def failing_too_long(failing_since: datetime | None, now: datetime) -> bool:
    return failing_since is not None and now - failing_since >= DISABLE_AFTER


def failure_text(outcome: Outcome) -> str:
    """The delivery's `last_error`: the failure, or the status with the body's start."""
    if outcome.error:
        text = outcome.error
    elif outcome.excerpt:
        text = f"HTTP {outcome.status_code}: {outcome.excerpt}"
    else:
        text = f"HTTP {outcome.status_code}"
    return text[:MAX_ERROR]


def retry_after(value: str | None, now: datetime) -> timedelta | None:
    """A Retry-After header's wait: delta-seconds, or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return timedelta(seconds=min(int(value[:9]), int(MAX_RETRY_AFTER.total_seconds())))
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(when - now, timedelta(0))


# --- what a request may carry ---------------------------------------------------------------


@dataclass(frozen=True)
class EndpointFields:
    url: str
    types: tuple[str, ...]
    sources: tuple[str, ...]
    description: str
    enabled: bool


def url(value: str, field: str, *, allow_private: bool) -> str:
    """A target URL, or InvalidArgument WEBHOOK_URL_NOT_ALLOWED saying why not (its own
    reason, so it raises on its own: validation.py)."""
    if not value:
        raise InvalidArgument(FieldViolation(field, "is required: an https:// URL"))
    try:
        outbound.check_url(value, allow_private=allow_private)
    except outbound.UrlNotAllowed as refused:
        raise InvalidArgument(FieldViolation(field, str(refused)), reason="WEBHOOK_URL_NOT_ALLOWED") from None
    return value


def event_filter(types: Sequence[str], sources: Sequence[str], prefix: str, bad: Violations) -> Filter:
    """Subscribe's filter rules, reported on the endpoint's own field names."""
    own = Violations()
    flt = build_filter(types, sources, own)
    bad.extend(FieldViolation(f"{prefix}.{v.field}", v.description) for v in own.found)
    return flt


def description(value: str, field: str, bad: Violations) -> str:
    if len(value) > MAX_DESCRIPTION or not value.isprintable():
        bad.add(field, f"must be at most {MAX_DESCRIPTION} printable characters")
    return value


def idempotency_key(value: str, field: str, bad: Violations) -> str:
    """PublishEvent's rule (envelope.py): optional; 1 to 128 of 0x21..0x7E."""
    problem = key_problem(value) if value else None
    if problem:
        bad.add(field, problem)
    return value


@dataclass(frozen=True)
class Range:
    """RedeliverEvents' bounds; zero and None mean unbounded."""

    min_sequence: int
    max_sequence: int
    start_time: datetime | None
    end_time: datetime | None


def redelivery_range(found: Range, bad: Violations) -> Range:
    if found.min_sequence < 0:
        bad.add("min_sequence", "must not be negative")
    if found.max_sequence < 0:
        bad.add("max_sequence", "must not be negative")
    if found.min_sequence and found.max_sequence and found.max_sequence < found.min_sequence:
        bad.add("max_sequence", "must be at least min_sequence")
    if found.start_time and found.end_time and found.end_time <= found.start_time:
        bad.add("end_time", "must be later than start_time")
    if not (found.min_sequence or found.max_sequence or found.start_time or found.end_time):
        bad.add("min_sequence", "give at least one bound: a sequence or a time")
    return found


def excerpt(body: bytes) -> str:
    return body[: MAX_EXCERPT * 4].decode("utf-8", "replace")[:MAX_EXCERPT]
