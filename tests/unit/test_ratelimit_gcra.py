"""GCRA arithmetic, the in-process backend's all-or-nothing charge, the IETF fields."""

from __future__ import annotations

from nexus_server.ratelimit import gcra, headers
from nexus_server.ratelimit.limits import Limit
from nexus_server.ratelimit.memory import MemoryBackend

MINUTE = 60_000_000


class FakeTime:
    def __init__(self) -> None:
        self.now = 1_000_000_000_000

    def __call__(self) -> int:
        return self.now


def test_a_fresh_subject_may_spend_its_whole_minute_at_once_and_no_more() -> None:
    tat = 0
    now = 5 * MINUTE
    admitted = 0
    for _ in range(70):
        outcome = gcra.admit(tat, now, 60, 1)
        if outcome.allowed:
            tat = outcome.new_tat
            admitted += 1
    assert admitted == 60


def test_the_allowance_refills_at_the_limits_rate() -> None:
    now = 5 * MINUTE
    tat = now + MINUTE  # the whole minute spent
    assert not gcra.admit(tat, now, 60, 1).allowed
    assert gcra.admit(tat, now + 1_000_000, 60, 1).allowed  # one call per second comes back


def test_a_refusal_says_how_long_to_wait() -> None:
    now = 5 * MINUTE
    outcome = gcra.admit(now + MINUTE, now, 60, 3)
    assert not outcome.allowed
    assert outcome.retry_us == 3_000_000
    assert outcome.remaining == 0


def test_remaining_counts_down_with_each_call() -> None:
    now = 5 * MINUTE
    first = gcra.admit(0, now, 10, 1)
    second = gcra.admit(first.new_tat, now, 10, 1)
    assert (first.remaining, second.remaining) == (9, 8)


def test_cost_zero_reports_without_charging() -> None:
    now = 5 * MINUTE
    outcome = gcra.admit(0, now, 10, 0)
    assert outcome.allowed and outcome.remaining == 10 and outcome.new_tat == now


async def test_a_call_refused_by_one_limit_charges_none_of_the_others() -> None:
    clock = FakeTime()
    backend = MemoryBackend(clock)
    key = Limit("apikey", "apikey:k", 100)
    tenant = Limit("tenant", "tenant:t", 2)
    assert (await backend.charge([key, tenant], 1)).allowed
    assert (await backend.charge([key, tenant], 1)).allowed
    for _ in range(5):
        refused = await backend.charge([key, tenant], 1)
        assert not refused.allowed
        assert [s.limit.policy for s in refused.refused_by] == ["tenant"]
    # The key limit was charged twice, not seven times.
    alone = await backend.charge([key], 0)
    assert alone.states[0].remaining == 98


async def test_the_in_process_backend_refills_with_time() -> None:
    clock = FakeTime()
    backend = MemoryBackend(clock)
    limit = Limit("user", "user:u", 60)
    for _ in range(60):
        assert (await backend.charge([limit], 1)).allowed
    assert not (await backend.charge([limit], 1)).allowed
    clock.now += 2_000_000
    assert (await backend.charge([limit], 1)).allowed


async def test_idle_counters_are_forgotten() -> None:
    clock = FakeTime()
    backend = MemoryBackend(clock, sweep_every=1)
    await backend.charge([Limit("user", "user:u", 60)], 1)
    clock.now += 2 * MINUTE
    await backend.charge([Limit("user", "user:v", 60)], 1)
    assert set(backend._tats) == {"user:v"}


async def test_headers_follow_the_ietf_draft_fields() -> None:
    backend = MemoryBackend(FakeTime())
    decision = await backend.charge([Limit("apikey", "apikey:k", 100), Limit("tenant", "tenant:t", 600)], 1)
    fields = dict(headers.fields(decision))
    assert fields["ratelimit-policy"] == '"apikey";q=100;w=60, "tenant";q=600;w=60'
    assert fields["ratelimit"] == '"apikey";r=99;t=1, "tenant";r=599;t=1'
