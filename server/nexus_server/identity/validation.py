"""Input checks shared by the identity RPCs: every bad field becomes a field violation."""

from __future__ import annotations

import re

from nexus_server.common.errors import FieldViolation, InvalidArgument

MAX_EMAIL = 254
MAX_DISPLAY_NAME = 100
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL = re.compile(rf"^[A-Za-z0-9.!#$%&'*+/=?^_`{{|}}~-]{{1,64}}@{_LABEL}(?:\.{_LABEL})+$")


def email(value: str, field: str = "email") -> str:
    """The trimmed, lower-cased address, or INVALID_ARGUMENT."""
    normalized = value.strip().lower()
    if not normalized:
        raise InvalidArgument(FieldViolation(field, "is required"))
    if len(normalized) > MAX_EMAIL or not _EMAIL.fullmatch(normalized) or ".." in normalized:
        raise InvalidArgument(
            FieldViolation(field, f"must be a valid email address of at most {MAX_EMAIL} characters")
        )
    return normalized


def display_name(value: str, field: str = "display_name") -> str:
    name = value.strip()
    if len(name) > MAX_DISPLAY_NAME:
        raise InvalidArgument(FieldViolation(field, f"must be at most {MAX_DISPLAY_NAME} characters"))
    if not name.isprintable():
        raise InvalidArgument(FieldViolation(field, "must not contain control characters"))
    return name


def required(value: str, field: str, max_chars: int) -> str:
    if not value:
        raise InvalidArgument(FieldViolation(field, "is required"))
    return bounded(value, field, max_chars)


def bounded(value: str, field: str, max_chars: int) -> str:
    if len(value) > max_chars:
        raise InvalidArgument(FieldViolation(field, f"must be at most {max_chars} characters"))
    if "\x00" in value:
        # Valid UTF-8 and valid protobuf, but PostgreSQL's text cannot hold it.
        raise InvalidArgument(FieldViolation(field, "must not contain NUL characters"))
    return value
