"""What a publisher may put in an event's envelope (CloudEvents after 1.0), and the limits.

Format problems of `type`, `source`, `subject`, `time` and `idempotency_key` are reported
together as INVALID_REQUEST field violations; a `data` object over 64 KiB (compact UTF-8
JSON) or 32 levels deep is EVENT_DATA_TOO_LARGE; a well-formed but reserved source
(`nexus`, `nexus/…`) is PERMISSION_DENIED SOURCE_RESERVED, checked last so a caller fixes
format first.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from nexus_server.common.errors import FieldViolation, InvalidArgument, PermissionDenied
from nexus_server.common.text import HIDDEN_WHY, has_control
from nexus_server.common.validation import Violations
from nexus_server.events.filters import source_problem, type_problem

MAX_DATA_BYTES = 65_536
MAX_DATA_DEPTH = 32
MAX_SUBJECT = 256
MAX_KEY = 128
MAX_FUTURE = timedelta(minutes=5)
# Besides what common.text refuses in every name (controls, invisible format characters such
# as bidirectional overrides and zero-width spaces, surrogates, private-use and unassigned
# code points), a subject may not break a line: it is shown on one line in logs and consoles.
_LINE_BREAKS = frozenset({"Zl", "Zp"})


@dataclass(frozen=True)
class Draft:
    """The publisher-set part of an event, before it has an id and a sequence."""

    type: str
    source: str
    subject: str = ""
    time: datetime | None = None
    data: dict[str, Any] = field(default_factory=dict)
    idempotency_key: str = ""


def key_problem(key: str) -> str | None:
    """Why `key` is not a valid idempotency key (1 to 128 of 0x21..0x7E), or None."""
    if len(key) > MAX_KEY:
        return f"must be at most {MAX_KEY} characters"
    if any(not 0x21 <= ord(c) <= 0x7E for c in key):
        return "must be printable ASCII without spaces (0x21 to 0x7E)"
    return None


def subject_problem(subject: str) -> str | None:
    if len(subject) > MAX_SUBJECT:
        return f"must be at most {MAX_SUBJECT} characters"
    if has_control(subject) or any(unicodedata.category(c) in _LINE_BREAKS for c in subject):
        return f"must be printable text on one line; {HIDDEN_WHY}"
    return None


def depth(value: Any) -> int:
    """Nesting depth of a JSON value: a scalar is 0, `{}` is 1, `{"a": []}` is 2."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            level += 1
            stack.extend((v, level) for v in item.values())
        elif isinstance(item, list):
            level += 1
            stack.extend((v, level) for v in item)
        deepest = max(deepest, level)
    return deepest


def encoded_size(data: dict[str, Any]) -> int:
    """Bytes of `data` as compact UTF-8 JSON (the limit's measure)."""
    return len(json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode())


def check(draft: Draft, now: datetime) -> None:
    """Raise the error a publish of `draft` at `now` deserves, or return if it is fine."""
    with Violations() as bad:
        for name, problem in (
            ("type", type_problem(draft.type)),
            ("source", source_problem(draft.source)),
            ("subject", subject_problem(draft.subject)),
            ("idempotency_key", key_problem(draft.idempotency_key)),
        ):
            if problem:
                bad.add(name, problem)
        if draft.time is not None and draft.time > now + MAX_FUTURE:
            bad.add("time", "must not be more than 5 minutes after the server's clock")
    too_deep = depth(draft.data) > MAX_DATA_DEPTH
    if too_deep or encoded_size(draft.data) > MAX_DATA_BYTES:
        why = (
            f"nests deeper than {MAX_DATA_DEPTH} levels"
            if too_deep
            else f"exceeds {MAX_DATA_BYTES} bytes as compact UTF-8 JSON"
        )
        raise InvalidArgument(
            FieldViolation("data", why),
            reason="EVENT_DATA_TOO_LARGE",
            metadata={"limit_bytes": str(MAX_DATA_BYTES)},
        )
    if draft.source == "nexus" or draft.source.startswith("nexus/"):
        raise PermissionDenied(
            "the source `nexus` and sources under `nexus/` are reserved for Nexus's own events",
            reason="SOURCE_RESERVED",
        )


def same_envelope(
    event_type: str,
    source: str,
    subject: str,
    time: datetime,
    create_time: datetime,
    data: dict[str, Any],
    draft: Draft,
) -> bool:
    """Whether a retry's `draft` describes the stored event. A retry without `time` matches
    an event whose time defaulted to its append time."""
    expected_time = create_time if draft.time is None else draft.time
    return (event_type, source, subject, data) == (
        draft.type,
        draft.source,
        draft.subject,
        draft.data,
    ) and time == expected_time
