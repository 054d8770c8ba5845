"""Human text that hides nothing: what common.text refuses in names and subjects."""

from __future__ import annotations

import pytest

from nexus_server.common.text import has_control

# Each one is invisible or reorders what a reader sees (bidirectional text, "Trojan Source").
HIDDEN = [
    *(chr(c) for c in range(0x200B, 0x2010)),  # zero-width space/joiners, LRM, RLM
    *(chr(c) for c in range(0x202A, 0x202F)),  # embeddings and overrides
    *(chr(c) for c in range(0x2066, 0x206A)),  # isolates
    "\ufeff",  # zero-width no-break space (byte-order mark)
    "\u00ad",  # soft hyphen
    "\u061c",  # Arabic letter mark
    "\U000e0041",  # tag character
]


@pytest.mark.parametrize("hidden", HIDDEN, ids=lambda c: f"U+{ord(c):04X}")
def test_format_characters_are_refused_anywhere(hidden: str) -> None:
    assert has_control(f"{hidden}a"), "at the start"
    assert has_control(f"a{hidden}b"), "inside"
    assert has_control(f"a{hidden}"), "at the end"


@pytest.mark.parametrize("control", ["\x00", "\n", "\x1b", "\x7f", "\x85", "\ud800", "\ue000", "\U0010ffff"])
def test_controls_surrogates_private_and_unassigned_are_refused(control: str) -> None:
    assert has_control(f"a{control}b")


@pytest.mark.parametrize("text", ["deal_8fK2", "Ünïcode — 東京 ✓", "مرحبا", "a b", ""])
def test_visible_text_in_any_script_passes(text: str) -> None:
    assert not has_control(text)
