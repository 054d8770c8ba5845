"""API-key rules on plain values: which scopes a caller may grant, and what a key's name may hold."""

from __future__ import annotations

import pytest

from nexus_server.apikeys import rules
from nexus_server.common.errors import FieldViolation, PermissionDenied

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
    out: list[FieldViolation] = []
    rules.clean_name(f"prod{hidden}key", "api_key.name", out)
    assert [v.field for v in out] == ["api_key.name"]


def test_a_name_may_hold_any_visible_text() -> None:
    out: list[FieldViolation] = []
    assert rules.clean_name("  Ünïcode backend — 東京 ✓  ", "api_key.name", out) == "Ünïcode backend — 東京 ✓"
    assert out == []
