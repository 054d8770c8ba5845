"""The stream guard follows the revocation feed under the kinds the capabilities write."""

from __future__ import annotations

from nexus_server.apikeys.workflows import FEED_KIND
from nexus_server.auth.principal import Principal, PrincipalKind
from nexus_server.identity import tokens
from nexus_server.interceptors import streams
from nexus_server.tenants import cache


def test_the_guards_feed_kinds_are_the_ones_the_capabilities_write() -> None:
    assert streams.APIKEY == FEED_KIND
    assert (streams.SESSION, streams.USER) == (tokens.SESSION, tokens.USER)
    assert (streams.TENANT, streams.MEMBERSHIP, streams.USER) == (cache.TENANT, cache.MEMBERSHIP, cache.USER)


def test_a_persons_stream_is_named_by_session_user_tenant_and_membership() -> None:
    person = Principal(PrincipalKind.USER, "usr_1", session_id="ses_1")
    assert set(streams.names_of(person, "ten_1")) == {
        ("user", "usr_1"),
        ("session", "ses_1"),
        ("tenant", "ten_1"),
        ("membership", "ten_1/usr_1"),
        ("membership", "ten_1/*"),
    }


def test_a_keys_stream_is_named_by_key_and_tenant() -> None:
    key = Principal(PrincipalKind.API_KEY, "eco_api_1", tenant_id="ten_1")
    assert set(streams.names_of(key, "ten_1")) == {("apikey", "eco_api_1"), ("tenant", "ten_1")}
