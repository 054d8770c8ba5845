from __future__ import annotations

import pytest

from nexus_server.common.ids import is_id, new_id


def test_ids_carry_their_prefix_and_sort_by_time() -> None:
    first = new_id("usr", now_ms=1_700_000_000_000)
    later = new_id("usr", now_ms=1_700_000_000_001)
    assert first.startswith("usr_") and is_id(first, "usr")
    assert first < later


def test_ids_are_unique_within_one_millisecond() -> None:
    ids = {new_id("evt", now_ms=1) for _ in range(10_000)}
    assert len(ids) == 10_000


def test_shape_check_rejects_other_prefixes_and_bad_characters() -> None:
    good = new_id("ten")
    assert not is_id(good, "usr")
    assert not is_id(good[:-1] + "-", "ten")
    assert not is_id("ten_short", "ten")


def test_unknown_prefix_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        new_id("zzz")
