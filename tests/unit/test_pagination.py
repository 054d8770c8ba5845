"""common/pagination.py: only tokens this server minted, for this RPC and query, open."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nexus_server.common import pagination
from nexus_server.common.errors import InvalidArgument


def _refused(token: str, rpc: str = "ListThings", query: object = ("t", 1)) -> None:
    with pytest.raises(InvalidArgument) as raised:
        pagination.open_token(token, rpc, query)
    assert raised.value.reason == "PAGE_TOKEN_INVALID"


@given(st.lists(st.text(), max_size=3))
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
