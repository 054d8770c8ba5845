"""tenants/rules.py: each rule returns the cleaned value and adds its violations to the
request's one collector, so a request hears of every bad field at once."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pytest

from nexus_server.common.errors import FieldViolation, InvalidArgument
from nexus_server.common.ids import new_id
from nexus_server.common.pagination import DEFAULT_PAGE, MAX_PAGE
from nexus_server.common.validation import Violations
from nexus_server.tenants import rules

SLUG_SHAPE = (
    "must be 3-63 lower-case letters, digits and single hyphens, starting with a letter "
    "and not ending with a hyphen"
)
EMAIL_SHAPE = "must be a single address local@domain of at most 254 characters"
ROLE_SHAPE = "must be owner, admin, member, read_only or a rol_… id"
BARE = "no scheme, path, credentials, spaces or '*'"


def _found(bad: Violations) -> list[tuple[str, str]]:
    return [(v.field, v.description) for v in bad.found]


# --- slug, text_name, description, domain, email ----------------------------------------------

Rule = Callable[[str, str, Violations], str]
NAME: Rule = partial(rules.text_name, limit=10)
TEXT = "  Line one.\nLine two, with ümlauts and 😀.  "


@pytest.mark.parametrize(
    ("rule", "given", "cleaned"),
    [
        (rules.slug, "  Acme-Sales1 ", "acme-sales1"),
        (NAME, "  Acme Ltd  ", "Acme Ltd"),
        (partial(rules.text_name, limit=10, required=False), "  ", ""),
        (rules.description, TEXT, TEXT),
        (rules.domain, " Portal.Example.COM.:443 ", "portal.example.com"),
        (rules.domain, "", ""),
        (rules.email, "  Ada.Lovelace@Example.COM ", "ada.lovelace@example.com"),
    ],
)
def test_a_good_value_comes_back_cleaned(rule: Rule, given: str, cleaned: str) -> None:
    bad = Violations()
    assert rule(given, "field", bad) == cleaned
    assert not bad


@pytest.mark.parametrize(
    ("rule", "given", "description"),
    [
        *(
            (rules.slug, v, SLUG_SHAPE)
            for v in ["ab", "1acme", "acme-", "ac--me", "acme_sales", "ácme", "", "a" * 64]
        ),
        (rules.slug, "Admin", "'admin' is reserved"),
        (NAME, "   ", "is required"),
        (NAME, "x" * 11, "must be at most 10 characters"),
        (NAME, "Acme\u202eLtd", "must not contain control characters"),
        (NAME, "Acme\x07", "must not contain control characters"),
        (rules.description, "x" * 501, "must be at most 500 characters"),
        (rules.description, "nul \x00 inside", "must be plain text"),
        (rules.description, "private use \ue000", "must be plain text"),
        (rules.description, "unassigned \U000e0fff", "must be plain text"),
        (rules.domain, "https://portal.example.com", f"must be a bare host name: {BARE}"),
        (rules.domain, "localhost", "must have at least two labels, as in portal.example.com"),
        (rules.domain, "10.0.0.1", "IP address literals are not domains"),
        *(
            (rules.email, v, EMAIL_SHAPE)
            for v in [
                "ada",
                "ada@",
                "@example.com",
                "ada@@example.com",
                "ada lovelace@example.com",
                "ada@example..com",
                "Ada <ada@example.com>",
                "ädä@example.com",
                "a" * 65 + "@example.com",
                "ada@" + "e" * 251 + ".com",
            ]
        ),
    ],
)
def test_a_bad_value_is_refused_with_its_field_and_reason(rule: Rule, given: str, description: str) -> None:
    bad = Violations()
    rule(given, "some.field", bad)
    assert _found(bad) == [("some.field", description)]


def test_a_reserved_slug_and_a_refused_domain_come_back_cleaned_and_empty() -> None:
    bad = Violations()
    assert rules.slug(" Admin ", "tenant.slug", bad) == "admin"
    assert rules.domain("localhost", "tenant.domain", bad) == ""
    assert len(bad) == 2


# --- identifier and page_size ----------------------------------------------------------------


def test_an_identifier_of_the_right_kind_passes() -> None:
    bad = Violations()
    tenant_id = new_id("ten")
    assert rules.identifier(tenant_id, "ten", "tenant_id", bad) == tenant_id
    assert rules.identifier("", "grp", "group_id", bad, required=False) == ""
    assert not bad


def test_a_missing_or_malformed_identifier_is_refused() -> None:
    bad = Violations()
    rules.identifier("", "ten", "tenant_id", bad)
    rules.identifier(new_id("usr"), "ten", "id", bad)
    rules.identifier("ten_short", "ten", "tenant.id", bad)
    assert _found(bad) == [
        ("tenant_id", "is required"),
        ("id", "must be an id of the form ten_…"),
        ("tenant.id", "must be an id of the form ten_…"),
    ]


@pytest.mark.parametrize(("requested", "size"), [(0, DEFAULT_PAGE), (7, 7), (MAX_PAGE + 1, MAX_PAGE)])
def test_a_page_size_is_bounded(requested: int, size: int) -> None:
    bad = Violations()
    assert rules.page_size(requested, bad) == size
    assert not bad


def test_a_negative_page_size_is_refused() -> None:
    bad = Violations()
    rules.page_size(-1, bad)
    assert _found(bad) == [("page_size", "must not be negative")]


# --- role_names and order_roles --------------------------------------------------------------


def test_role_names_are_trimmed_deduplicated_and_ordered() -> None:
    first, second = sorted([new_id("rol"), new_id("rol")])
    bad = Violations()
    cleaned = rules.role_names([second, " member", "owner", first, "member "], "roles", bad, minimum=1)
    assert cleaned == ["owner", "member", first, second]
    assert not bad


def test_role_names_out_of_bounds_or_of_the_wrong_shape_are_refused() -> None:
    bad = Violations()
    rules.role_names([], "member.roles", bad, minimum=1)
    rules.role_names(["admin", "superuser", "grp_x"], "roles", bad, minimum=0, maximum=2)
    assert _found(bad) == [
        ("member.roles", "must name at least 1 role"),
        ("roles", "must name at most 2 roles"),
        ("roles[1]", ROLE_SHAPE),
        ("roles[2]", ROLE_SHAPE),
    ]


def test_role_names_allow_no_more_than_max_roles_by_default() -> None:
    many = sorted(new_id("rol") for _ in range(rules.MAX_ROLES + 1))
    bad = Violations()
    assert rules.role_names(many, "roles", bad, minimum=0) == many
    assert _found(bad) == [("roles", f"must name at most {rules.MAX_ROLES} roles")]


def test_order_roles_puts_built_in_roles_first_in_rank_order_then_custom_ids_sorted() -> None:
    custom = sorted([new_id("rol"), new_id("rol")])
    shuffled = {custom[1], "read_only", custom[0], "admin", "owner"}
    assert rules.order_roles(shuffled) == ["owner", "admin", "read_only", *custom]
    assert rules.order_roles(("member", "member")) == ["member"]


# --- one collector for a whole request -------------------------------------------------------


def test_every_bad_field_of_a_request_is_reported_at_once_in_order() -> None:
    with pytest.raises(InvalidArgument) as raised, Violations() as bad:
        rules.identifier("nope", "ten", "tenant.id", bad)
        rules.slug("x", "tenant.slug", bad)
        rules.text_name("", "tenant.display_name", bad, limit=100)
        rules.domain("localhost", "tenant.domain", bad)
        rules.email("ada", "email", bad)
        rules.role_names(["boss"], "roles", bad, minimum=0)
        rules.page_size(-5, bad)
    assert raised.value.violations == [
        FieldViolation("tenant.id", "must be an id of the form ten_…"),
        FieldViolation("tenant.slug", SLUG_SHAPE),
        FieldViolation("tenant.display_name", "is required"),
        FieldViolation("tenant.domain", "must have at least two labels, as in portal.example.com"),
        FieldViolation("email", EMAIL_SHAPE),
        FieldViolation("roles[0]", ROLE_SHAPE),
        FieldViolation("page_size", "must not be negative"),
    ]
    assert raised.value.reason == "INVALID_REQUEST"


def test_a_request_with_only_good_fields_passes_with_cleaned_values() -> None:
    with Violations() as bad:
        slug = rules.slug(" Acme ", "tenant.slug", bad)
        name = rules.text_name(" Acme Ltd ", "tenant.display_name", bad, limit=100)
        domain = rules.domain("Acme.Example.com", "tenant.domain", bad)
    assert (slug, name, domain) == ("acme", "Acme Ltd", "acme.example.com")
