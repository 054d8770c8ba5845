"""Input checks shared by the identity RPCs: each bad field becomes a violation in the
request's `Violations` (common/validation.py), so a client learns of all of them at once.
Password checks (passwords.py) raise on their own: they carry their own ErrorReason."""

from __future__ import annotations

import re

from nexus_server.common.validation import Violations

MAX_EMAIL = 254
MAX_DISPLAY_NAME = 100
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL = re.compile(rf"^[A-Za-z0-9.!#$%&'*+/=?^_`{{|}}~-]{{1,64}}@{_LABEL}(?:\.{_LABEL})+$")


def email(value: str, field: str, bad: Violations) -> str:
    """The trimmed, lower-cased address."""
    normalized = value.strip().lower()
    if not normalized:
        bad.add(field, "is required")
    elif len(normalized) > MAX_EMAIL or not _EMAIL.fullmatch(normalized) or ".." in normalized:
        bad.add(field, f"must be a valid email address of at most {MAX_EMAIL} characters")
    return normalized


def display_name(value: str, field: str, bad: Violations) -> str:
    name = value.strip()
    if len(name) > MAX_DISPLAY_NAME:
        bad.add(field, f"must be at most {MAX_DISPLAY_NAME} characters")
    elif not name.isprintable():
        bad.add(field, "must not contain control characters")
    return name


def required(value: str, field: str, max_chars: int, bad: Violations) -> str:
    if not value:
        bad.add(field, "is required")
        return value
    return bounded(value, field, max_chars, bad)


def bounded(value: str, field: str, max_chars: int, bad: Violations) -> str:
    if len(value) > max_chars:
        bad.add(field, f"must be at most {max_chars} characters")
    elif "\x00" in value:
        # Valid UTF-8 and valid protobuf, but PostgreSQL's text cannot hold it.
        bad.add(field, "must not contain NUL characters")
    return value
