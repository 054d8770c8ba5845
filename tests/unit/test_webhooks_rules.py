"""What an attempt's answer means for the next one: the kinds of answer, the schedule with its
jitter, and Retry-After (honoured, capped at a day, in seconds or as an HTTP date)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from nexus_server.events.webhooks import rules
from nexus_server.events.webhooks.rules import Outcome, Verdict

NOW = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("code", "verdict"),
    [
        (200, Verdict.SUCCEEDED),
        (204, Verdict.SUCCEEDED),
        (0, Verdict.UNREACHABLE),
        (408, Verdict.UNREACHABLE),
        (429, Verdict.UNREACHABLE),
        (503, Verdict.UNREACHABLE),
        (410, Verdict.GONE),
        (301, Verdict.REFUSED),
        (400, Verdict.REFUSED),
        (422, Verdict.REFUSED),
    ],
)
def test_each_answer_has_its_kind(code: int, verdict: Verdict) -> None:
    assert rules.verdict(Outcome(code, timedelta(0))) is verdict


def test_the_schedule_is_jittered_by_at_most_a_tenth_and_ends_after_the_tenth_attempt() -> None:
    failed = Outcome(500, timedelta(0))
    for made, wait in enumerate(rules.SCHEDULE, start=1):
        low = rules.next_attempt(made, failed, NOW, rand=lambda: 0.0)
        high = rules.next_attempt(made, failed, NOW, rand=lambda: 1.0)
        assert low == NOW + wait * 0.9 and high == NOW + wait * 1.1
    assert rules.next_attempt(rules.MAX_ATTEMPTS, failed, NOW) is None


def test_retry_after_is_honoured_when_longer_and_capped_at_a_day() -> None:
    asked = rules.retry_after("120", NOW)
    assert asked == timedelta(seconds=120)
    first = rules.next_attempt(1, Outcome(429, timedelta(0), retry_after=asked), NOW, rand=lambda: 0.5)
    assert first == NOW + timedelta(seconds=120)  # not the schedule's 5 s
    later = rules.next_attempt(4, Outcome(429, timedelta(0), retry_after=asked), NOW, rand=lambda: 0.5)
    assert later == NOW + rules.SCHEDULE[3]  # the schedule's 2 h is already longer
    huge = rules.retry_after("99999999999", NOW)
    assert huge == rules.MAX_RETRY_AFTER


def test_retry_after_as_an_http_date_and_nonsense() -> None:
    assert rules.retry_after("Tue, 01 Jan 2030 00:10:00 GMT", NOW) == timedelta(minutes=10)
    assert rules.retry_after("Mon, 31 Dec 2029 00:00:00 GMT", NOW) == timedelta(0)
    assert rules.retry_after("soon", NOW) is None
    assert rules.retry_after(None, NOW) is None


def test_five_days_of_failures_is_too_long() -> None:
    assert not rules.failing_too_long(None, NOW)
    assert not rules.failing_too_long(NOW - timedelta(days=4, hours=23), NOW)
    assert rules.failing_too_long(NOW - timedelta(days=5), NOW)
