"""Human text that hides nothing: the check names and subjects share, whatever their capability.

Names and subjects are shown to people (console, logs, webhook payloads, email). Format
characters (Unicode category Cf) are invisible, and the bidirectional ones (U+202A-U+202E,
U+2066-U+2069, U+200E, U+200F) reorder what is shown, so a name could pass for another or
hide part of itself ("Trojan Source", CVE-2021-42574); zero-width ones (U+200B-U+200D,
U+FEFF) make two names that look the same differ. Private-use and unassigned code points
render as nothing a reader can check, and controls and lone surrogates are not text at all.
"""

from __future__ import annotations

import unicodedata

# Cc controls, Cf format characters, Cs surrogates, Co private use, Cn unassigned.
HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})
# The field violation's description when has_control finds something.
HIDDEN_WHY = (
    "must not contain control characters or invisible ones such as bidirectional overrides "
    "or zero-width spaces"
)


def has_control(text: str) -> bool:
    """Whether `text` holds a character a reader cannot see or that changes how it reads."""
    return any(unicodedata.category(c) in HIDDEN_CATEGORIES for c in text)
