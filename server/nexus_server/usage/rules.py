"""What a valid usage record is (UsageRecord in the contract), as plain functions.

Each record is judged on its own: a bad one is rejected with its reason and field
violations, and the others of its batch go on. No grpc, no SQL.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from nexus_server.common.errors import FieldViolation

MAX_RECORDS = 1000
MAX_QUANTITY = 1_000_000_000_000
MAX_KEY = 128
MAX_PROPERTY_KEYS = 32
MAX_PROPERTIES_BYTES = 4096
FUTURE = timedelta(minutes=5)
PAST = timedelta(days=7)
METRIC = re.compile(r"^[a-z][a-z0-9_.]{0,63}$")
RESERVED = "api_calls"


@dataclass(frozen=True)
class Record:
    """A record that passed every check, ready to store."""

    metric: str
    quantity: int
    idempotency_key: str
    time: datetime
    properties: dict[str, Any] | None = None


@dataclass(frozen=True)
class Rejection:
    index: int
    idempotency_key: str
    reason: str
    message: str
    violations: tuple[FieldViolation, ...] = ()


def is_reserved(metric: str) -> bool:
    return metric == RESERVED or metric.startswith("nexus.")


@functools.lru_cache(maxsize=4096)  # a batch's records share a few metrics: judge each once
def metric_problem(metric: str) -> str:
    """Why `metric` is not a metric name, or "" if it is one."""
    if not metric:
        return "must not be empty"
    if not METRIC.fullmatch(metric):
        return "must match ^[a-z][a-z0-9_.]{0,63}$"
    return ""


def judge(
    index: int,
    field: str,
    *,
    metric: str,
    quantity: int,
    idempotency_key: str,
    time: datetime | None,
    properties: dict[str, Any] | None,
    now: datetime,
    allow_reserved: bool = False,
) -> Record | Rejection:
    """The record at `field` (`records[3]`) as stored, or why it is refused."""
    bad: list[FieldViolation] = []
    problem = metric_problem(metric)
    if problem:
        bad.append(FieldViolation(f"{field}.metric", problem))
    if not 1 <= quantity <= MAX_QUANTITY:
        bad.append(FieldViolation(f"{field}.quantity", f"must be from 1 to {MAX_QUANTITY:,}"))
    # isascii() and isprintable(): exactly 0x20-0x7e, a few times faster than the regex.
    if not 1 <= len(idempotency_key) <= MAX_KEY or not (
        idempotency_key.isascii() and idempotency_key.isprintable()
    ):
        bad.append(
            FieldViolation(f"{field}.idempotency_key", f"must be 1 to {MAX_KEY} printable ASCII characters")
        )
    if properties is not None:
        if len(properties) > MAX_PROPERTY_KEYS:
            bad.append(FieldViolation(f"{field}.properties", f"must have at most {MAX_PROPERTY_KEYS} keys"))
        elif len(json.dumps(properties, separators=(",", ":"))) > MAX_PROPERTIES_BYTES:
            bad.append(
                FieldViolation(f"{field}.properties", f"must be at most {MAX_PROPERTIES_BYTES} bytes as JSON")
            )
    key = idempotency_key[:MAX_KEY]
    if bad:
        return Rejection(index, key, "INVALID_REQUEST", "the record is malformed", tuple(bad))
    if is_reserved(metric) and not allow_reserved:
        return Rejection(
            index,
            key,
            "METRIC_RESERVED",
            f"{metric!r} is recorded by Nexus itself",
            (FieldViolation(f"{field}.metric", "api_calls and nexus.* are reserved"),),
        )
    when = now if time is None else time
    if not now - PAST <= when <= now + FUTURE:
        return Rejection(
            index,
            key,
            "TIMESTAMP_OUT_OF_RANGE",
            "the timestamp is outside the accepted window",
            (FieldViolation(f"{field}.timestamp", "must be at most 5 minutes ahead and 7 days behind"),),
        )
    return Record(metric, quantity, idempotency_key, when, properties or None)


def day_of(when: datetime) -> datetime:
    return when.replace(hour=0, minute=0, second=0, microsecond=0)
