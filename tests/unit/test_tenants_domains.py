"""Custom domains are normalised to one form, and everything that cannot route is refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nexus_server.tenants.domains import DomainError, normalise_domain

NORMALISED = [
    ("portal.acme.com", "portal.acme.com"),
    ("  Portal.ACME.com  ", "portal.acme.com"),
    ("portal.acme.com:443", "portal.acme.com"),
    ("portal.acme.com.", "portal.acme.com"),
    ("Portal.Acme.com.:8080", "portal.acme.com"),
    ("Bücher.Example", "xn--bcher-kva.example"),
    ("xn--bcher-kva.example", "xn--bcher-kva.example"),
    ("faß.de", "xn--fa-hia.de"),  # IDNA 2008, not transitional: ß is kept
    ("ａｃｍｅ.com", "acme.com"),  # full-width letters map to ASCII (UTS #46)
    ("例え.テスト", "xn--r8jz45g.xn--zckzah"),
    ("a-b.c-d.example", "a-b.c-d.example"),
    ("1password.com", "1password.com"),
    (("a" * 63 + ".") * 3 + "b" * 61, ("a" * 63 + ".") * 3 + "b" * 61),  # exactly 253
    ("", ""),
]

REFUSED = [
    ("1.2.3.4", "IP"),
    ("1.2.3.4:80", "IP"),
    ("::1", "IP"),
    ("[::1]", "IP"),
    ("[2001:db8::1]:443", "IP"),
    ("2001:db8::1", "IP"),
    ("10.1", "IP"),
    ("localhost", "two labels"),
    ("com", "two labels"),
    ("https://acme.com", "bare host"),
    ("acme.com/path", "bare host"),
    ("user@acme.com", "bare host"),
    ("*.acme.com", "bare host"),
    ("acme .com", "bare host"),
    ("acme.com:99999", "port"),
    ("acme.com:", "port"),
    ("acme.com:http", "port"),
    ("-acme.com", "IDNA"),
    ("acme-.com", "IDNA"),
    ("ac--me.com", "IDNA"),
    ("acme..com", "IDNA"),
    ("_dmarc.acme.com", "IDNA"),
    ("☃.net", "IDNA"),
    ("xn--zz.com", "IDNA"),
    ("a" * 64 + ".com", "IDNA"),
    (("a" * 63 + ".") * 4 + "com", "too long"),
    ("a" * 300, "at most 260"),
    ("a" * 61 + "." + ("b" * 63 + ".") * 3 + "cc", "too long"),  # 254 characters in all
    (".", "host name"),
]


@pytest.mark.parametrize(("raw", "normal"), NORMALISED)
def test_domains_are_normalised(raw: str, normal: str) -> None:
    assert normalise_domain(raw) == normal


@pytest.mark.parametrize(("raw", "why"), REFUSED)
def test_unroutable_domains_are_refused_with_a_reason(raw: str, why: str) -> None:
    with pytest.raises(DomainError) as error:
        normalise_domain(raw)
    expected = "internationalised" if why == "IDNA" else why.lower()
    assert expected in str(error.value).lower()


@given(st.text(max_size=300))
def test_any_text_is_normalised_or_refused_and_normal_forms_are_fixed_points(raw: str) -> None:
    try:
        normal = normalise_domain(raw)
    except DomainError:
        return
    assert normalise_domain(normal) == normal
    assert normal == normal.lower() and normal.isascii() and len(normal) <= 253
