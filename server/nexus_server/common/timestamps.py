"""google.protobuf Timestamp and Duration to and from Python's datetime and timedelta.

Every capability's message conversion uses these, so a timestamp a client sends is checked
the same way everywhere (google.protobuf's own range: years 1 to 9999) and a bad one is a
field violation added to the request's `Violations`, never an OverflowError.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf import duration_pb2, timestamp_pb2

from nexus_server.common.validation import Violations

# google.protobuf.Timestamp's valid range (0001-01-01 to 9999-12-31).
_MIN_SECONDS, _MAX_SECONDS = -62_135_596_800, 253_402_300_799
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def optional_timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    """For a message field that stays unset when the value is None."""
    return None if value is None else timestamp(value)


def duration(value: timedelta) -> duration_pb2.Duration:
    message = duration_pb2.Duration()
    message.FromTimedelta(value)
    return message


def to_datetime(ts: timestamp_pb2.Timestamp, field: str, bad: Violations) -> datetime:
    """The UTC datetime `ts` names; outside Timestamp's range a violation (and the epoch,
    which `bad` keeps anyone from using)."""
    if not (_MIN_SECONDS <= ts.seconds <= _MAX_SECONDS and 0 <= ts.nanos <= 999_999_999):
        bad.add(field, "is not a valid timestamp (years 1 to 9999)")
        return _EPOCH
    return ts.ToDatetime(tzinfo=UTC)


def to_timedelta(d: duration_pb2.Duration, field: str, maximum: timedelta, bad: Violations) -> timedelta:
    """A non-negative duration of at most `maximum`; anything else a violation (and zero)."""
    seconds, nanos = d.seconds, d.nanos
    value = timedelta(0)
    in_range = (
        -999_999_999 <= nanos <= 999_999_999
        and seconds >= 0
        and nanos >= 0
        and seconds <= maximum.total_seconds()
    )
    if in_range:
        value = timedelta(seconds=seconds, microseconds=nanos // 1000)
    if not in_range or value > maximum:
        bad.add(field, f"must be from 0 to {maximum.days} days")
        return timedelta(0)
    return value
