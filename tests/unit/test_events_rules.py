"""Event rules without a server: type patterns, envelope limits, page tokens, buffers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nexus_server.common import pagination
from nexus_server.common.errors import InvalidArgument, PermissionDenied
from nexus_server.common.validation import Violations
from nexus_server.db.uow import StoredEvent
from nexus_server.events import envelope
from nexus_server.events.envelope import Draft
from nexus_server.events.filters import Filter, build_filter
from nexus_server.events.hub import Entry, Subscriber

NOW = datetime(2026, 1, 1, tzinfo=UTC)
segment = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True)


def _filter(types: list[str], sources: list[str] = []) -> Filter:  # noqa: B006
    problems = Violations()
    flt = build_filter(types, sources, problems)
    assert problems.found == ()
    return flt


@pytest.mark.parametrize(
    ("pattern", "type", "matches"),
    [
        ("deal.*", "deal.won", True),
        ("deal.*", "deal.stage.changed", True),
        ("deal.*", "deal", False),
        ("deal.*", "dealer.won", False),
        ("deal_x.*", "dealyx.won", False),
        ("deal.won", "deal.won", True),
        ("deal.won", "deal.won.big", False),
        ("*", "any.thing", True),
    ],
)
def test_type_patterns_match_whole_segments(pattern: str, type: str, matches: bool) -> None:
    assert _filter([pattern]).matches(type, "crm") is matches


@given(st.lists(segment, min_size=2, max_size=4), st.integers(1, 3))
def test_a_prefix_pattern_matches_every_type_below_it(segments: list[str], keep: int) -> None:
    keep = min(keep, len(segments) - 1)
    assert _filter([".".join(segments[:keep]) + ".*"]).matches(".".join(segments), "s")


def test_sources_must_also_match() -> None:
    flt = _filter(["deal.*"], ["crm"])
    assert (flt.matches("deal.won", "crm"), flt.matches("deal.won", "erp")) == (True, False)


@pytest.mark.parametrize("pattern", ["Deal.*", "deal.", "deal.**", "*.won", "deal", ".*", "x" * 129])
def test_malformed_patterns_are_named(pattern: str) -> None:
    problems = Violations()
    build_filter([pattern], [], problems)
    assert [p.field for p in problems.found] == ["types[0]"]


def test_more_than_twenty_patterns_are_refused() -> None:
    problems = Violations()
    build_filter(["a.b"] * 21, [], problems)
    assert "types" in {p.field for p in problems.found}


def test_data_is_limited_to_64_kib_of_compact_json() -> None:
    envelope.check(Draft("a.b", "s", data={"x": "y" * 65_000}), NOW)
    with pytest.raises(InvalidArgument) as caught:
        envelope.check(Draft("a.b", "s", data={"x": "y" * 65_536}), NOW)
    assert caught.value.reason == "EVENT_DATA_TOO_LARGE"


def test_data_may_nest_32_levels_and_no_deeper() -> None:
    def nested(levels: int) -> dict[str, object]:
        value: dict[str, object] = {}
        for _ in range(levels - 1):
            value = {"a": value}
        return value

    envelope.check(Draft("a.b", "s", data=nested(32)), NOW)
    with pytest.raises(InvalidArgument):
        envelope.check(Draft("a.b", "s", data=nested(33)), NOW)


def test_time_may_lead_the_clock_by_five_minutes_only() -> None:
    envelope.check(Draft("a.b", "s", time=NOW + timedelta(minutes=5)), NOW)
    with pytest.raises(InvalidArgument):
        envelope.check(Draft("a.b", "s", time=NOW + timedelta(minutes=5, seconds=1)), NOW)


def test_reserved_sources_are_permission_denied_after_format_checks() -> None:
    with pytest.raises(PermissionDenied):
        envelope.check(Draft("a.b", "nexus/x"), NOW)
    with pytest.raises(InvalidArgument):
        envelope.check(Draft("Bad", "nexus"), NOW)


@given(st.integers(0, 2**62))
def test_a_page_token_round_trips_only_for_its_query(last: int) -> None:
    token = pagination.encode("ListEvents", ["abc"], [last])
    assert pagination.decode(token, "ListEvents", ["abc"], (int,)) == (last,)
    with pytest.raises(InvalidArgument):
        pagination.decode(token, "ListEvents", ["abd"], (int,))
    with pytest.raises(InvalidArgument):  # a key of another shape is not believed either
        pagination.decode(token, "ListEvents", ["abc"], (str,))


def _event(sequence: int, type: str = "a.b") -> StoredEvent:
    return StoredEvent(f"evt_{sequence}", "ten_x", sequence, type, "s", "", NOW, {}, None, NOW)


def test_a_full_buffer_refuses_more_and_keeps_its_place() -> None:
    subscriber = Subscriber("ten_x", Filter(), through=0, since=None, max_events=3, max_bytes=10**6)
    entries = [Entry(_event(n), lambda e: (e, 10)) for n in range(1, 6)]
    assert subscriber.offer(entries) is False
    assert ([e.sequence for e in subscriber.buffer], subscriber.through) == ([1, 2, 3], 3)


def test_filtered_out_events_advance_the_cursor() -> None:
    subscriber = Subscriber("ten_x", _filter(["x.y"]), through=0, since=None, max_events=3, max_bytes=10**6)
    assert subscriber.offer([Entry(_event(n), lambda e: (e, 10)) for n in range(1, 10)]) is True
    assert (subscriber.cursor, len(subscriber.buffer)) == (9, 0)


@pytest.mark.parametrize("hidden", ["\u202e", "\u2066", "\u200b", "\u200f", "\ufeff"])
def test_a_subject_may_not_hide_bidi_or_zero_width_characters(hidden: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        envelope.check(Draft(type="deal.won", source="crm", subject=f"deal_1{hidden}gnp.exe"), NOW)
    assert [v.field for v in raised.value.violations] == ["subject"]


def test_a_subject_may_hold_visible_text_in_any_script() -> None:
    envelope.check(Draft(type="deal.won", source="crm", subject="Ünïcode — 東京 ✓ مرحبا"), NOW)
