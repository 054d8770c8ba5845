"""The API key's text: id and secret shape, CRC32 checksum, digest and start."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from nexus_server.apikeys import key_format
from nexus_server.common.ids import ALPHABET


def _key() -> tuple[str, str]:
    key_id = key_format.new_key_id()
    return key_id, key_format.new_full_key(key_id)


def test_a_new_key_has_the_documented_shape() -> None:
    key_id, full = _key()
    assert key_id.startswith("eco_api_") and len(key_id) == 30
    assert all(c in ALPHABET for c in key_id[len("eco_api_") :])
    assert full.startswith(key_id + ".")
    assert len(full) == 69  # id, dot, 32 random and 6 checksum characters
    assert all(c in ALPHABET for c in full[31:])


def test_a_new_key_parses_to_its_id() -> None:
    key_id, full = _key()
    parsed = key_format.parse(full)
    assert parsed is not None and parsed.key_id == key_id


def test_ids_sort_by_creation_time() -> None:
    assert key_format.new_key_id(1_000) < key_format.new_key_id(2_000)


def test_a_changed_character_breaks_the_checksum() -> None:
    _, full = _key()
    for position in range(31, len(full)):
        swapped = "A" if full[position] != "A" else "B"
        corrupted = full[:position] + swapped + full[position + 1 :]
        assert key_format.parse(corrupted) is None, position


def test_a_truncated_or_extended_key_is_refused() -> None:
    _, full = _key()
    assert key_format.parse(full[:-1]) is None
    assert key_format.parse(full + "A") is None
    assert key_format.parse(full.replace(".", "_")) is None


def test_the_stored_digest_is_the_sha256_of_the_full_key_and_not_the_key() -> None:
    _, full = _key()
    digest = key_format.digest(full)
    assert digest == hashlib.sha256(full.encode()).hexdigest()
    assert full not in digest and full[31:] not in digest


def test_start_is_the_id_the_dot_and_four_secret_characters() -> None:
    key_id, full = _key()
    assert key_format.start_of(full) == full[:35]
    assert key_format.start_of(full).startswith(key_id + ".")


@given(st.text(max_size=120))
def test_arbitrary_text_never_parses_unless_it_carries_a_valid_checksum(text: str) -> None:
    parsed = key_format.parse(text)
    if parsed is not None:  # only possible for a string of the exact form with a good checksum
        assert len(text) == 69 and text.startswith("eco_api_")


def test_two_keys_never_share_a_secret() -> None:
    secrets = {key_format.new_full_key("eco_api_" + "0" * 22)[31:] for _ in range(200)}
    assert len(secrets) == 200
