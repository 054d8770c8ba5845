"""Metering against a real database: every metered call is one `api_calls` record and one
count in the hourly endpoint statistics, written in batches off the request path; a failed
batch is kept and retried; GetEndpointStats reads its calls, errors and percentiles back."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from sqlalchemy import func, select

from nexus_server.auth.principal import Principal, PrincipalKind
from nexus_server.common.clock import FrozenClock
from nexus_server.common.errors import InvalidArgument
from nexus_server.common.ids import new_id, random_base62
from nexus_server.db.engine import create_async
from nexus_server.db.uow import Database, UnitOfWork
from nexus_server.interceptors.call import Call, MethodInfo
from nexus_server.usage.endpoints import EndpointReport, endpoint_stats
from nexus_server.usage.latency import RELATIVE_ERROR
from nexus_server.usage.metering import Meter
from nexus_server.usage.tables import usage_daily, usage_endpoint_hourly, usage_records
from nexus_server.usage.terms import BuiltInTerms, Terms

NOW = datetime(2026, 5, 4, 10, 20, tzinfo=UTC)
CREATE = MethodInfo.parse("/nexus.apikey.v1.ApiKeyService/CreateApiKey", streaming=False)
LIST = MethodInfo.parse("/nexus.apikey.v1.ApiKeyService/ListApiKeys", streaming=False)
GATEWAY = MethodInfo("gateway/crm", "gateway", "crm", True, False)
HEALTH = MethodInfo.parse("/grpc.health.v1.Health/Check", streaming=False)


async def free(uow: UnitOfWork, tenant_id: str) -> str:
    return "free"


class FailingTerms:
    """Terms that fail the next `failures` lookups (a database hiccup mid-flush)."""

    def __init__(self, failures: int):
        self.failures = failures
        self.inner = BuiltInTerms(free)

    async def terms(self, uow: UnitOfWork, tenant_id: str, at: datetime) -> Terms:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("database went away")
        return await self.inner.terms(uow, tenant_id, at)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(NOW)


@pytest.fixture
async def db(database_url: str, clock: FrozenClock) -> AsyncIterator[Database]:
    database = Database(create_async(database_url), clock)
    yield database
    await database.dispose()


def key_id() -> str:
    return "eco_api_" + random_base62(22)


class _TimedCall(Call):
    """A call that took exactly `seconds`: measuring from `started` would add however long
    the test took to hand it to the meter, enough on a loaded machine to move a 3 ms call
    out of its latency bucket."""

    __slots__ = ("_seconds",)
    _seconds: float

    def elapsed(self) -> float:
        return self._seconds


def call(
    tenant_id: str,
    subject: str,
    *,
    method: MethodInfo = CREATE,
    code: grpc.StatusCode = grpc.StatusCode.OK,
    seconds: float = 0.01,
    callers: bool = True,
) -> Call:
    kind = PrincipalKind.API_KEY if subject.startswith("eco_api_") else PrincipalKind.USER
    c = _TimedCall(method, None, {})
    c._seconds = seconds
    c.started = time.perf_counter() - seconds
    c.code = code
    c.principal = Principal(kind, subject, tenant_id=tenant_id)
    c.tenant_id = tenant_id
    c.tenant_is_callers = callers
    return c


async def records_of(db: Database, tenant_id: str) -> list[dict[str, object]]:
    async with db.unit_of_work(readonly=True) as uow:
        rows = await uow.session.execute(
            select(usage_records.c.metric, usage_records.c.quantity, usage_records.c.properties).where(
                usage_records.c.tenant_id == tenant_id
            )
        )
        return [{"metric": m, "quantity": q, **(p or {})} for m, q, p in rows]


async def daily_of(db: Database, tenant_id: str) -> int:
    async with db.unit_of_work(readonly=True) as uow:
        total = await uow.session.execute(
            select(func.coalesce(func.sum(usage_daily.c.quantity), 0)).where(
                usage_daily.c.tenant_id == tenant_id, usage_daily.c.metric == "api_calls"
            )
        )
        return int(total.scalar_one())


async def hourly_of(db: Database, tenant_id: str) -> dict[tuple[datetime, str, str, str], int]:
    """(hour, method, api_key_id, code) -> calls, over every latency bucket."""
    t = usage_endpoint_hourly
    async with db.unit_of_work(readonly=True) as uow:
        rows = await uow.session.execute(
            select(t.c.hour, t.c.method, t.c.api_key_id, t.c.code, func.sum(t.c.calls))
            .where(t.c.tenant_id == tenant_id)
            .group_by(t.c.hour, t.c.method, t.c.api_key_id, t.c.code)
        )
        return {(h.astimezone(UTC), m, k, c): int(n) for h, m, k, c, n in rows}


async def stats(
    db: Database,
    tenant_id: str,
    start: datetime | None = None,
    end: datetime | None = None,
    api_key_id: str = "",
) -> EndpointReport:
    async with db.unit_of_work(readonly=True) as uow:
        return await endpoint_stats(uow, tenant_id, start, end, api_key_id)


async def test_each_metered_call_is_one_record_and_one_hourly_count(db: Database, clock: FrozenClock) -> None:
    tenant, other = new_id("ten"), new_id("ten")
    key, person = key_id(), new_id("usr")
    meter = Meter(db, BuiltInTerms(free), max_batch=10_000)
    for _ in range(150):
        meter.after(call(tenant, key))
    for _ in range(30):
        meter.after(call(tenant, person, method=LIST, code=grpc.StatusCode.NOT_FOUND))
    clock.advance(timedelta(hours=1))
    for _ in range(20):
        meter.after(call(tenant, key, code=grpc.StatusCode.PERMISSION_DENIED))
    for _ in range(5):
        meter.after(call(other, key))
    # Not metered: nobody signed in, a tenant that is not the caller's, no tenant, health.
    anonymous = call(tenant, key)
    anonymous.principal = None
    meter.after(anonymous)
    meter.after(call(tenant, person, callers=False))
    meter.after(call("", person))
    meter.after(call(tenant, key, method=HEALTH))
    assert meter.pending == 205

    await meter.stop()

    assert meter.pending == 0
    records = await records_of(db, tenant)
    assert len(records) == 200
    assert {(r["metric"], r["quantity"]) for r in records} == {("api_calls", 1)}
    assert await daily_of(db, tenant) == 200
    assert await daily_of(db, other) == 5
    by_key = [r for r in records if "api_key_id" in r]
    by_person = [r for r in records if "user_id" in r]
    assert len(by_key) == 170 and {r["api_key_id"] for r in by_key} == {key}
    assert len(by_person) == 30 and {r["user_id"] for r in by_person} == {person}
    assert {(r["method"], r["code"]) for r in by_person} == {(LIST.full_name, "NOT_FOUND")}
    assert all(9.0 <= float(r["latency_ms"]) < 1000 for r in records)  # type: ignore[arg-type]

    first, second = NOW.replace(minute=0), NOW.replace(minute=0) + timedelta(hours=1)
    assert await hourly_of(db, tenant) == {
        (first, CREATE.full_name, key, "OK"): 150,
        (first, LIST.full_name, "", "NOT_FOUND"): 30,
        (second, CREATE.full_name, key, "PERMISSION_DENIED"): 20,
    }


async def test_a_second_flush_adds_to_the_same_hourly_rows(db: Database) -> None:
    tenant, key = new_id("ten"), key_id()
    meter = Meter(db, BuiltInTerms(free))
    for _ in range(3):
        meter.after(call(tenant, key))
    assert await meter.flush() == 3
    for _ in range(4):
        meter.after(call(tenant, key))
    assert await meter.flush() == 4
    assert await meter.flush() == 0
    assert await hourly_of(db, tenant) == {(NOW.replace(minute=0), CREATE.full_name, key, "OK"): 7}
    assert len(await records_of(db, tenant)) == 7


async def test_a_full_batch_wakes_the_flusher_before_its_interval(db: Database) -> None:
    tenant, key = new_id("ten"), key_id()
    meter = Meter(db, BuiltInTerms(free), interval=3600.0, max_batch=25)
    runner = asyncio.create_task(meter.run())
    try:
        for _ in range(24):
            meter.after(call(tenant, key))
        await asyncio.sleep(0.2)
        assert meter.pending == 24  # below max_batch: waits for the (hour-long) interval
        meter.after(call(tenant, key))
        for _ in range(500):  # up to 10 s
            if len(await records_of(db, tenant)) == 25:
                break
            await asyncio.sleep(0.02)
        assert len(await records_of(db, tenant)) == 25
        assert meter.pending == 0
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_a_backlog_left_by_a_failure_waits_for_the_interval(db: Database) -> None:
    tenant, key = new_id("ten"), key_id()
    source = FailingTerms(failures=1_000)
    meter = Meter(db, source, interval=3600.0, max_batch=5)
    runner = asyncio.create_task(meter.run())
    try:
        for _ in range(5):
            meter.after(call(tenant, key))  # a full batch: one attempt, which fails
        for _ in range(100):
            if source.failures < 1_000:
                break
            await asyncio.sleep(0.02)
        assert source.failures == 999
        for _ in range(20):
            meter.after(call(tenant, key))  # past the mark: no retry before the interval
        await asyncio.sleep(0.2)
        assert source.failures == 999
        assert meter.pending == 25
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_a_large_backlog_is_written_in_several_transactions(db: Database) -> None:
    tenant, key = new_id("ten"), key_id()
    meter = Meter(db, BuiltInTerms(free), max_flush=40)
    for _ in range(100):
        meter.after(call(tenant, key))
    assert await meter.flush() == 40
    assert meter.pending == 60
    await meter.stop()
    assert meter.pending == 0
    assert len(await records_of(db, tenant)) == 100
    assert await daily_of(db, tenant) == 100


async def test_a_failed_flush_puts_the_batch_back_and_the_retry_counts_it_once(db: Database) -> None:
    tenant, key = new_id("ten"), key_id()
    meter = Meter(db, FailingTerms(failures=1))
    for _ in range(10):
        meter.after(call(tenant, key))
    with pytest.raises(ConnectionError):
        await meter.flush()
    assert meter.pending == 10
    assert await records_of(db, tenant) == []
    assert await hourly_of(db, tenant) == {}  # the batch's hourly counts rolled back with it

    for _ in range(5):
        meter.after(call(tenant, key, code=grpc.StatusCode.INTERNAL))
    assert await meter.flush() == 15
    assert len(await records_of(db, tenant)) == 15
    assert await daily_of(db, tenant) == 15
    hour = NOW.replace(minute=0)
    assert await hourly_of(db, tenant) == {
        (hour, CREATE.full_name, key, "OK"): 10,
        (hour, CREATE.full_name, key, "INTERNAL"): 5,
    }


async def test_the_buffer_is_bounded_and_drops_the_oldest(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    tenant, key = new_id("ten"), key_id()
    meter = Meter(db, FailingTerms(failures=1), max_pending=5)
    for _ in range(3):
        meter.after(call(tenant, key))
    with pytest.raises(ConnectionError):
        await meter.flush()
    for _ in range(4):  # the 3 put back and 4 newer: 2 of the 3 oldest go
        meter.after(call(tenant, key, code=grpc.StatusCode.UNAVAILABLE))
    assert meter.pending == 5
    with caplog.at_level(logging.WARNING, logger="nexus.usage"):
        assert await meter.flush() == 5
    assert any("dropped 2 calls" in r.getMessage() for r in caplog.records)
    hour = NOW.replace(minute=0)
    assert await hourly_of(db, tenant) == {
        (hour, CREATE.full_name, key, "OK"): 1,
        (hour, CREATE.full_name, key, "UNAVAILABLE"): 4,
    }


async def test_stop_never_raises_and_says_what_it_could_not_write(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    tenant, key = new_id("ten"), key_id()
    meter = Meter(db, FailingTerms(failures=1))
    meter.after(call(tenant, key))
    with caplog.at_level(logging.ERROR, logger="nexus.usage"):
        await meter.stop()
    assert any("1 calls could not be written" in r.getMessage() for r in caplog.records)


async def test_endpoint_stats_reports_calls_errors_and_percentiles(db: Database, clock: FrozenClock) -> None:
    tenant, key, other_key, person = new_id("ten"), key_id(), key_id(), new_id("usr")
    meter = Meter(db, BuiltInTerms(free))
    for _ in range(90):
        meter.after(call(tenant, key, seconds=0.010))
    for _ in range(6):
        meter.after(call(tenant, key, seconds=1.5, code=grpc.StatusCode.UNAVAILABLE))
    for _ in range(4):
        meter.after(call(tenant, person, seconds=0.2, code=grpc.StatusCode.NOT_FOUND))
    for _ in range(100):
        meter.after(call(tenant, other_key, method=GATEWAY, seconds=0.05))
    for _ in range(30):
        meter.after(call(tenant, other_key, method=LIST, seconds=0.003))
    for _ in range(7):
        meter.after(call(new_id("ten"), key))  # another tenant's calls are not in the report
    await meter.flush()
    clock.advance(timedelta(minutes=5))

    report = await stats(db, tenant)
    hour = NOW.replace(minute=0)
    assert (report.start, report.end) == (
        hour + timedelta(hours=1) - timedelta(days=1),
        hour + timedelta(hours=1),
    )
    assert report.as_of == clock.now()
    assert (report.total_calls, report.total_errors) == (230, 10)
    # Most called first; the tie between the gateway and CreateApiKey goes by method name.
    assert [(e.method, e.project, e.calls, e.errors) for e in report.endpoints] == [
        (CREATE.full_name, "", 100, 10),
        ("gateway/crm", "crm", 100, 0),
        (LIST.full_name, "", 30, 0),
    ]
    create, gateway, listing = report.endpoints
    assert create.calls_by_code == {"NOT_FOUND": 4, "OK": 90, "UNAVAILABLE": 6}
    assert create.p50.total_seconds() == pytest.approx(0.010, rel=RELATIVE_ERROR)
    assert create.p95.total_seconds() == pytest.approx(1.5, rel=RELATIVE_ERROR)
    assert create.p99.total_seconds() == pytest.approx(1.5, rel=RELATIVE_ERROR)
    assert gateway.p50.total_seconds() == pytest.approx(0.05, rel=RELATIVE_ERROR)
    assert listing.p99.total_seconds() == pytest.approx(0.003, rel=RELATIVE_ERROR)

    mine = await stats(db, tenant, api_key_id=key)
    assert [(e.method, e.calls, e.errors) for e in mine.endpoints] == [(CREATE.full_name, 96, 6)]
    assert mine.endpoints[0].p50.total_seconds() == pytest.approx(0.010, rel=RELATIVE_ERROR)

    earlier = await stats(db, tenant, start=hour - timedelta(hours=5), end=hour)
    assert (earlier.total_calls, earlier.endpoints) == (0, [])
    assert (await stats(db, tenant, api_key_id=key_id())).endpoints == []


async def test_endpoint_stats_widens_the_window_to_whole_hours(db: Database) -> None:
    tenant, key = new_id("ten"), key_id()
    meter = Meter(db, BuiltInTerms(free))
    meter.after(call(tenant, key))
    await meter.flush()
    hour = NOW.replace(minute=0)
    report = await stats(db, tenant, start=hour + timedelta(minutes=15), end=hour + timedelta(minutes=30))
    assert (report.start, report.end) == (hour, hour + timedelta(hours=1))
    assert report.total_calls == 1
    exact = await stats(db, tenant, start=hour - timedelta(hours=2), end=hour)
    assert (exact.start, exact.end, exact.total_calls) == (hour - timedelta(hours=2), hour, 0)


@pytest.mark.parametrize(
    ("start", "end", "api_key_id", "fields"),
    [
        (NOW, NOW, "", ["end_time"]),
        (NOW, NOW - timedelta(hours=1), "", ["end_time"]),
        (NOW - timedelta(days=91), None, "", ["start_time"]),
        (None, NOW - timedelta(days=91), "", ["end_time"]),
        (NOW - timedelta(days=80), NOW + timedelta(days=20), "", ["end_time"]),
        (None, None, "eco_api_short", ["api_key_id"]),
        (None, None, "usr_" + "a" * 22, ["api_key_id"]),
        (NOW - timedelta(days=91), None, "nope", ["start_time", "api_key_id"]),
    ],
)
async def test_endpoint_stats_refuses_bad_windows_and_key_ids(
    db: Database, start: datetime | None, end: datetime | None, api_key_id: str, fields: list[str]
) -> None:
    with pytest.raises(InvalidArgument) as refused:
        await stats(db, new_id("ten"), start, end, api_key_id)
    assert [v.field for v in refused.value.violations] == fields


async def test_endpoint_stats_accepts_the_longest_window(db: Database) -> None:
    start = NOW.replace(minute=0) - timedelta(days=90)
    report = await stats(db, new_id("ten"), start=start, end=start + timedelta(days=90))
    assert report.end - report.start == timedelta(days=90)
