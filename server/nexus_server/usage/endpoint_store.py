"""SQL for the hourly endpoint statistics (usage_endpoint_hourly): the metering flusher adds
to them, GetEndpointStats sums them over a window."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from nexus_server.common.pacing import Pacer
from nexus_server.db.dialect import insert_for, is_postgres
from nexus_server.usage.tables import usage_endpoint_hourly as hourly

# (tenant_id, hour, method, api_key_id, code, bucket): the table's primary key.
HourlyKey = tuple[str, datetime, str, str, str, int]

_KEY = ["tenant_id", "hour", "method", "api_key_id", "code", "bucket"]


async def add_hourly(session: AsyncSession, counts: Mapping[HourlyKey, int], pacer: Pacer) -> None:
    """Add `counts` to the hourly rows, creating the missing ones. Rows go in key order, so
    replicas flushing at once lock shared rows in one order and cannot deadlock."""
    if not counts:
        return
    ordered = sorted(counts.items())
    if is_postgres(session):
        rows = await pacer.json_array(ordered, _row, default=_iso)
        await session.execute(_ADD_RECORDSET, {"rows": rows})
        return
    # One statement executed per row (executemany): compiled once and cached, where a
    # multi-row VALUES of a new size is compiled anew every flush, at ~0.3 ms a row.
    statement = insert_for(session)(hourly)
    statement = statement.on_conflict_do_update(
        index_elements=_KEY, set_={"calls": hourly.c.calls + statement.excluded.calls}
    )
    await session.execute(statement, [_row(item) for item in ordered])


def _row(item: tuple[HourlyKey, int]) -> dict[str, object]:
    (tenant_id, hour, method, api_key_id, code, bucket), calls = item
    return {
        "tenant_id": tenant_id,
        "hour": hour,
        "method": method,
        "api_key_id": api_key_id,
        "code": code,
        "bucket": bucket,
        "calls": calls,
    }


# PostgreSQL: the rows as one JSON parameter, one statement (executemany there is a round
# trip per row through the pipeline). The rows are unique by key, as ON CONFLICT requires.
_ADD_RECORDSET = text(
    """
    INSERT INTO usage_endpoint_hourly (tenant_id, hour, method, api_key_id, code, bucket, calls)
    SELECT r.tenant_id, r.hour, r.method, r.api_key_id, r.code, r.bucket, r.calls
    FROM json_to_recordset(CAST(:rows AS json)) AS r(
        tenant_id text, hour timestamptz, method text, api_key_id text, code text, bucket integer,
        calls bigint
    )
    ORDER BY r.tenant_id, r.hour, r.method, r.api_key_id, r.code, r.bucket
    ON CONFLICT (tenant_id, hour, method, api_key_id, code, bucket)
    DO UPDATE SET calls = usage_endpoint_hourly.calls + excluded.calls
    """
)


def _iso(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


async def window_counts(
    session: AsyncSession, tenant_id: str, start: datetime, end: datetime, api_key_id: str = ""
) -> list[tuple[str, str, int, int]]:
    """(method, code, bucket, calls) of the tenant's hours in [start, end), of one key if
    `api_key_id` is given, else of every caller."""
    where = [hourly.c.tenant_id == tenant_id, hourly.c.hour >= start, hourly.c.hour < end]
    if api_key_id:
        where.append(hourly.c.api_key_id == api_key_id)
    rows = await session.execute(
        select(hourly.c.method, hourly.c.code, hourly.c.bucket, func.sum(hourly.c.calls))
        .where(*where)
        .group_by(hourly.c.method, hourly.c.code, hourly.c.bucket)
    )
    return [(method, code, int(bucket), int(calls)) for method, code, bucket, calls in rows]


async def prune_hours(session: AsyncSession, before: datetime) -> int:
    """Drop the hours GetEndpointStats can no longer ask for (older than its 90 days)."""
    result = await session.execute(delete(hourly).where(hourly.c.hour < before))
    return int(getattr(result, "rowcount", 0) or 0)
