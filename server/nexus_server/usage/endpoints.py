"""GetEndpointStats: a tenant's calls to Nexus per method over a window of whole UTC hours,
with their status codes and latency percentiles, read from the hourly statistics that
metering.py keeps. Percentiles merge exactly across hours because the table stores counts
per fixed latency bucket (latency.py), and are within about 2.5% of the true latency.
No grpc, no SQL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from nexus_server.common.validation import Violations
from nexus_server.db.uow import UnitOfWork
from nexus_server.usage import endpoint_store
from nexus_server.usage.latency import percentile

HOUR = timedelta(hours=1)
DEFAULT_WINDOW = timedelta(hours=24)
MAX_WINDOW = timedelta(days=90)
MAX_AGE = timedelta(days=90)
GATEWAY = "gateway/"
# The apikeys capability's key id shape (`eco_api_` + 22 base62), restated: capabilities do
# not import each other, and a mismatch only makes the filter refuse a malformed id.
_KEY_ID = re.compile(r"eco_api_[0-9A-Za-z]{22}")


@dataclass(frozen=True)
class EndpointRow:
    method: str  # "/nexus.apikey.v1.ApiKeyService/CreateApiKey", or "gateway/<project>"
    project: str  # the project of gateway calls, else ""
    calls: int
    errors: int  # calls that did not end OK
    calls_by_code: dict[str, int]  # canonical status name -> calls
    p50: timedelta
    p95: timedelta
    p99: timedelta


@dataclass(frozen=True)
class EndpointReport:
    start: datetime
    end: datetime
    total_calls: int
    total_errors: int
    endpoints: list[EndpointRow]  # most called first, ties by method
    as_of: datetime


def floor_hour(when: datetime) -> datetime:
    return when.replace(minute=0, second=0, microsecond=0)


def ceil_hour(when: datetime) -> datetime:
    floor = floor_hour(when)
    return floor if floor == when else floor + HOUR


def _utc(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def project_of(method: str) -> str:
    return method[len(GATEWAY) :] if method.startswith(GATEWAY) else ""


def window(
    start: datetime | None, end: datetime | None, now: datetime, bad: Violations
) -> tuple[datetime, datetime]:
    """The window [start, end) widened to whole hours: `end` defaults to now, `start` to a
    day before the rounded end: by default the 24 hours that end with the hour under way."""
    given_end = now if end is None else _utc(end)
    last = ceil_hour(given_end)
    given_start = last - DEFAULT_WINDOW if start is None else _utc(start)
    first = floor_hour(given_start)
    too_old = first < floor_hour(now) - MAX_AGE
    if too_old:
        # Blame the field the client set: with start_time left out, end_time placed it.
        if start is not None:
            bad.add("start_time", f"must be at most {MAX_AGE.days} days ago")
        else:
            bad.add(
                "end_time", f"must be at most {MAX_AGE.days - 1} days ago (the window starts a day before it)"
            )
    if given_start >= given_end:
        bad.add("end_time", "must be after start_time")
    elif last - first > MAX_WINDOW and not too_old:
        bad.add("end_time", f"must be at most {MAX_WINDOW.days} days after start_time")
    return first, last


async def endpoint_stats(
    uow: UnitOfWork, tenant_id: str, start: datetime | None, end: datetime | None, api_key_id: str
) -> EndpointReport:
    """The tenant's endpoint statistics over the window, of one key if `api_key_id` is given
    (else of every caller, people and keys)."""
    now = uow.clock.now()
    with Violations() as bad:
        first, last = window(start, end, now, bad)
        if api_key_id and not _KEY_ID.fullmatch(api_key_id):
            bad.add("api_key_id", "must be an API key id (eco_api_ and 22 letters or digits)")

    calls: dict[str, int] = {}
    codes: dict[str, dict[str, int]] = {}
    buckets: dict[str, dict[int, int]] = {}
    for method, code, bucket, count in await endpoint_store.window_counts(
        uow.session, tenant_id, first, last, api_key_id
    ):
        calls[method] = calls.get(method, 0) + count
        by_code = codes.setdefault(method, {})
        by_code[code] = by_code.get(code, 0) + count
        by_bucket = buckets.setdefault(method, {})
        by_bucket[bucket] = by_bucket.get(bucket, 0) + count

    rows = []
    for method in sorted(calls, key=lambda m: (-calls[m], m)):
        by_bucket = buckets[method]
        by_code = dict(sorted(codes[method].items()))
        rows.append(
            EndpointRow(
                method=method,
                project=project_of(method),
                calls=calls[method],
                errors=sum(n for code, n in by_code.items() if code != "OK"),
                calls_by_code=by_code,
                p50=timedelta(seconds=percentile(by_bucket, 0.50)),
                p95=timedelta(seconds=percentile(by_bucket, 0.95)),
                p99=timedelta(seconds=percentile(by_bucket, 0.99)),
            )
        )
    return EndpointReport(
        start=first,
        end=last,
        total_calls=sum(r.calls for r in rows),
        total_errors=sum(r.errors for r in rows),
        endpoints=rows,
        as_of=now,
    )
