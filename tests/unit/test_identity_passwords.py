"""The password policy, bcrypt's 72-byte limit, and the hashing cost."""

from __future__ import annotations

import bcrypt
import pytest

from nexus_server.common.errors import InvalidArgument
from nexus_server.common.validation import Violations
from nexus_server.config import Settings
from nexus_server.identity import passwords, validation


@pytest.mark.parametrize(
    ("password", "missing"),
    [
        ("short-A1!", "at least 12 characters"),
        ("alllowercase-123!", "an upper-case letter"),
        ("ALLUPPERCASE-123!", "a lower-case letter"),
        ("No-Digits-Here!!", "a digit"),
        ("NoSymbols12345ab", "a symbol"),
    ],
)
def test_a_weak_password_names_what_it_misses(password: str, missing: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        passwords.check_policy(password, "password")
    assert caught.value.reason == "PASSWORD_TOO_WEAK"
    assert missing in caught.value.violations[0].description


def test_a_password_over_72_bytes_is_refused_not_cut_short() -> None:
    with pytest.raises(InvalidArgument) as caught:
        passwords.check_policy("Aa1!" + "é" * 35, "password")  # 74 bytes, 39 characters
    assert caught.value.reason == "PASSWORD_TOO_LONG"


def test_a_strong_password_passes() -> None:
    passwords.check_policy("Correct-Horse-9-Battery", "password")


def test_production_hashes_with_cost_12() -> None:
    assert Settings().bcrypt_rounds == 12


async def test_hashes_verify_and_unknown_users_check_a_dummy() -> None:
    hasher = passwords.Hasher(rounds=4, workers=1)
    try:
        hashed = await hasher.hash("Correct-Horse-9-Battery")
        assert bcrypt.checkpw(b"Correct-Horse-9-Battery", hashed.encode())
        assert await hasher.verify("Correct-Horse-9-Battery", hashed)
        assert not await hasher.verify("Correct-Horse-9-Battery", None)
    finally:
        hasher.close()


@pytest.mark.parametrize(
    "address", ["", "no-at-sign", "a@b", "a@@b.co", "a b@c.co", "x" * 250 + "@b.co", "a..b@c.co"]
)
def test_malformed_emails_are_invalid(address: str) -> None:
    with pytest.raises(InvalidArgument), Violations() as bad:
        validation.email(address, "email", bad)


def test_emails_are_trimmed_and_lower_cased() -> None:
    with Violations() as bad:
        assert validation.email("  Ann.Lee+x@Example.ORG ", "email", bad) == "ann.lee+x@example.org"
