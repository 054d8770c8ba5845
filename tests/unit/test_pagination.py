"""common/pagination.py: only tokens this server minted, for this RPC and query, open."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nexus_server.common import pagination
from nexus_server.common.errors import InvalidArgument
from nexus_server.common.validation import Violations


def _refused(token: str, rpc: str = "ListThings", query: object = ("t", 1)) -> None:
    with pytest.raises(InvalidArgument) as raised:
        pagination.open_token(token, rpc, query)
    assert raised.value.reason == "PAGE_TOKEN_INVALID"


@given(st.lists(st.text(max_size=100), max_size=3))  # positions are ids and times: short
def test_a_token_round_trips_for_its_rpc_and_query(position: list[str]) -> None:
    token = pagination.seal("ListThings", ("t", 1), position)
    assert pagination.open_token(token, "ListThings", ("t", 1)) == position
    _refused(token, rpc="ListOthers")
    _refused(token, query=("t", 2))


def test_empty_is_the_first_page_and_anything_altered_is_refused() -> None:
    assert pagination.open_token("", "ListThings", ()) is None
    token = pagination.seal("ListThings", ("t", 1), ["2026-01-01T00:00:00+00:00", "usr_1"])
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    for index in (0, len(raw) // 2, len(raw) - 1):
        altered = bytearray(raw)
        altered[index] ^= 1
        _refused(base64.urlsafe_b64encode(bytes(altered)).decode().rstrip("="))
    for bad in (token[:-4], token[:10], "x", "%%%", "A" * 3000, token + "A"):
        _refused(bad)


def test_another_secret_key_mints_tokens_this_one_refuses() -> None:
    pagination.configure("one secret key of enough length")
    token = pagination.seal("ListThings", ("t", 1), 7)
    pagination.configure("another secret key of enough length")
    _refused(token)
    pagination.configure("one secret key of enough length")
    assert pagination.open_token(token, "ListThings", ("t", 1)) == 7


# --- the one way every listing pages -------------------------------------------------------


def test_page_size_defaults_bounds_and_refuses_negatives() -> None:

    bad = Violations()
    assert pagination.page_size(0, bad) == pagination.DEFAULT_PAGE
    assert pagination.page_size(7, bad) == 7
    assert pagination.page_size(10**6, bad) == pagination.MAX_PAGE
    assert not bad
    pagination.page_size(-1, bad)
    assert [v.field for v in bad.found] == ["page_size"]


@given(st.datetimes(timezones=st.just(UTC)), st.text(max_size=30), st.integers(0, 2**62))
def test_a_key_round_trips_typed(time: datetime, name: str, number: int) -> None:

    token = pagination.encode("ListThings", ["q"], [time, name, number])
    assert pagination.decode(token, "ListThings", ["q"], (datetime, str, int)) == (time, name, number)


@pytest.mark.parametrize("shape", [(int,), (str, str), (int, str, int), (bool, str, int)])
def test_a_key_of_another_shape_is_refused(shape: tuple[type, ...]) -> None:
    token = pagination.encode("ListThings", ["q"], ["2026-01-01T00:00:00+00:00", "x", 3])
    with pytest.raises(InvalidArgument) as raised:
        pagination.decode(token, "ListThings", ["q"], shape)
    assert raised.value.reason == "PAGE_TOKEN_INVALID"


def test_an_empty_token_is_the_first_page() -> None:
    assert pagination.decode("", "ListThings", ["q"], (int,)) is None


def test_page_cuts_the_extra_row_and_mints_the_next_token() -> None:
    rows = list(range(11))
    kept, token = pagination.page(rows, 10, "ListThings", ["q"], lambda r: [r])
    assert kept == list(range(10))
    assert pagination.decode(token, "ListThings", ["q"], (int,)) == (9,)
    last, none = pagination.page(rows[:5], 10, "ListThings", ["q"], lambda r: [r])
    assert (last, none) == (rows[:5], "")
    assert pagination.page([], 10, "ListThings", ["q"], lambda r: [r]) == ([], "")


def test_page_of_walks_a_list_held_in_memory() -> None:
    items = [f"item{i}" for i in range(5)]
    seen: list[str] = []
    token = ""
    while True:
        page, token = pagination.page_of("ListItems", items, 2, token, ["all"])
        seen += page
        if not token:
            break
    assert seen == items
    with pytest.raises(InvalidArgument):
        pagination.page_of("ListItems", items, -1, "", ["all"])
