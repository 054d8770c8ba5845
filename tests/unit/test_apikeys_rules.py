"""API-key rules on plain values: which scopes a caller may grant, and what a key's name may hold."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from nexus_server.apikeys import rules
from nexus_server.apikeys.store import ApiKeyRow
from nexus_server.common.errors import InvalidArgument, PermissionDenied
from nexus_server.common.validation import Violations

READ_WRITE = frozenset({"apikeys:read", "apikeys:write"})


def test_a_key_may_grant_the_scopes_it_holds() -> None:
    assert rules.not_grantable(["apikeys:read"], READ_WRITE) == ()
    assert rules.not_grantable(["apikeys:write", "apikeys:read"], READ_WRITE) == ()


def test_a_key_may_not_grant_a_scope_it_lacks() -> None:
    assert rules.not_grantable(["apikeys:read", "billing:write", "usage:read"], READ_WRITE) == (
        "billing:write",
        "usage:read",
    )


def test_only_a_star_key_may_grant_star() -> None:
    # `*` holds every scope, including ones added later: holding each named one is not enough.
    assert rules.not_grantable(["*"], READ_WRITE) == ("*",)
    assert rules.not_grantable(["*"], rules.SCOPES - {"*"}) == ("*",)
    assert rules.not_grantable(["*", "billing:write"], frozenset({"*"})) == ()


def test_a_key_holding_nothing_grants_nothing() -> None:
    assert rules.not_grantable(["apikeys:read"], frozenset()) == ("apikeys:read",)


def test_a_person_may_grant_any_scope() -> None:
    # The caller table already required a tenant admin; a role is not a list of scopes.
    assert rules.not_grantable(["*", "billing:write"], rules.ANY_SCOPE) == ()


def test_the_refusal_names_the_scopes_and_its_reason() -> None:
    with pytest.raises(PermissionDenied) as raised:
        rules.check_grantable(["*", "apikeys:read", "usage:read"], READ_WRITE, "grant")
    assert raised.value.reason == "SCOPE_NOT_GRANTABLE"
    assert raised.value.metadata == {"scopes": "*,usage:read"}
    assert "*, usage:read" in raised.value.message


def test_a_grantable_request_passes() -> None:
    rules.check_grantable(["apikeys:read"], READ_WRITE, "grant")


@pytest.mark.parametrize(
    "hidden",
    [
        "\u200b",  # zero-width space
        "\u200d",  # zero-width joiner
        "\u200e",  # left-to-right mark
        "\u200f",  # right-to-left mark
        "\u202a",  # left-to-right embedding
        "\u202e",  # right-to-left override
        "\u2066",  # left-to-right isolate
        "\u2069",  # pop directional isolate
        "\ufeff",  # zero-width no-break space (BOM)
        "\u00ad",  # soft hyphen, another format character
    ],
)
def test_a_name_may_not_hide_format_characters(hidden: str) -> None:
    out = Violations()
    rules.clean_name(f"prod{hidden}key", "api_key.name", out)
    assert [v.field for v in out.found] == ["api_key.name"]


def test_a_name_may_hold_any_visible_text() -> None:
    out = Violations()
    assert rules.clean_name("  Ünïcode backend — 東京 ✓  ", "api_key.name", out) == "Ünïcode backend — 東京 ✓"
    assert not out


NOW = datetime(2026, 6, 1, tzinfo=UTC)


def _found(out: Violations) -> list[tuple[str, str]]:
    return [(v.field, v.description) for v in out.found]


def test_a_name_is_required_and_bounded() -> None:
    out = Violations()
    rules.clean_name("   ", "api_key.name", out)
    rules.clean_name("x" * (rules.MAX_NAME + 1), "other.name", out)
    assert rules.clean_name("x" * rules.MAX_NAME, "third.name", out) == "x" * rules.MAX_NAME
    assert _found(out) == [
        ("api_key.name", "must not be empty"),
        ("other.name", f"must be at most {rules.MAX_NAME} characters"),
    ]


def test_scopes_are_known_deduplicated_and_sorted() -> None:
    out = Violations()
    assert rules.clean_scopes(["usage:read", "apikeys:read", "usage:read"], "s", out) == (
        "apikeys:read",
        "usage:read",
    )
    assert not out


def test_each_unknown_scope_is_named_by_its_index() -> None:
    out = Violations()
    rules.clean_scopes(["apikeys:read", "apikeys:admin", "root"], "api_key.scopes", out)
    assert [v.field for v in out.found] == ["api_key.scopes[1]", "api_key.scopes[2]"]
    assert out.found[0].description.startswith("unknown scope; expected one of ")


def test_scopes_must_be_neither_empty_nor_too_many() -> None:
    out = Violations()
    assert rules.clean_scopes([], "a", out) == ()
    assert rules.clean_scopes(["apikeys:read"] * (rules.MAX_SCOPES + 1), "b", out) == ()
    assert _found(out) == [
        ("a", "must hold at least one scope"),
        ("b", f"must hold at most {rules.MAX_SCOPES} entries"),
    ]


def test_a_rate_limit_of_zero_means_the_default_and_others_are_bounded() -> None:
    out = Violations()
    assert rules.clean_rate_limit(0, "r", out) == rules.DEFAULT_RATE_LIMIT
    assert rules.clean_rate_limit(rules.MAX_RATE_LIMIT, "r", out) == rules.MAX_RATE_LIMIT
    assert not out
    rules.clean_rate_limit(-1, "low", out)
    rules.clean_rate_limit(rules.MAX_RATE_LIMIT + 1, "high", out)
    assert [v.field for v in out.found] == ["low", "high"]


def test_expiry_must_be_in_the_future_and_environment_known() -> None:
    out = Violations()
    rules.check_expiry(None, NOW, "never", out)
    rules.check_expiry(NOW + timedelta(seconds=1), NOW, "later", out)
    rules.check_expiry(NOW, NOW, "now", out)
    rules.check_environment("live", "env_ok", out)
    rules.check_environment("prod", "env", out)
    assert _found(out) == [
        ("now", "must be in the future"),
        ("env", "must be ENVIRONMENT_TEST or ENVIRONMENT_LIVE"),
    ]


def test_every_bad_field_of_a_request_is_reported_at_once() -> None:
    with pytest.raises(InvalidArgument) as raised, Violations() as bad:
        rules.clean_name("", "api_key.name", bad)
        rules.clean_scopes(["nope"], "api_key.scopes", bad)
        rules.clean_rate_limit(-5, "api_key.rate_limit_per_minute", bad)
    assert [v.field for v in raised.value.violations] == [
        "api_key.name",
        "api_key.scopes[0]",
        "api_key.rate_limit_per_minute",
    ]


BASE = ApiKeyRow(
    id="eco_api_x",
    tenant_id="ten_x",
    name="k",
    scopes=("apikeys:read",),
    environment="test",
    rate_limit_per_minute=100,
    start="eco_test_abcd",
    secret_hash="h",
    previous_secret_hash=None,
    previous_secret_expire_time=None,
    created_by="",
    create_time=NOW,
    update_time=NOW,
    expire_time=None,
    last_used_time=None,
    revoke_time=None,
    rotate_time=None,
)


def test_a_key_is_active_until_it_expires_and_revocation_wins() -> None:
    assert rules.state_of(BASE, NOW) == rules.ACTIVE
    assert rules.state_of(replace(BASE, expire_time=NOW + timedelta(hours=1)), NOW) == rules.ACTIVE
    assert rules.state_of(replace(BASE, expire_time=NOW), NOW) == rules.EXPIRED
    revoked = replace(BASE, expire_time=NOW - timedelta(hours=1), revoke_time=NOW - timedelta(hours=2))
    assert rules.state_of(revoked, NOW) == rules.REVOKED


def test_the_previous_secret_lives_only_through_its_grace_and_not_past_revocation() -> None:
    later = NOW + timedelta(hours=1)
    rotated = replace(BASE, previous_secret_hash="old", previous_secret_expire_time=later)
    assert rules.previous_secret_live(rotated, NOW)
    assert not rules.previous_secret_live(rotated, later)
    assert not rules.previous_secret_live(
        replace(BASE, previous_secret_hash="old", previous_secret_expire_time=later, revoke_time=NOW), NOW
    )
    assert not rules.previous_secret_live(BASE, NOW)
