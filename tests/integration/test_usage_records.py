"""UsageService through the real server: per-record outcomes, idempotency under concurrency,
rollups equal to the raw records, quotas and their events, history and the overview."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import struct_pb2, timestamp_pb2
from sqlalchemy import select

from nexus.usage.v1 import metric_usage_pb2, usage_record_pb2
from nexus.usage.v1 import usage_service_pb2 as pb
from nexus.usage.v1 import usage_service_pb2_grpc as rpc
from nexus_server.app.server import NexusServer
from nexus_server.db.schema import events
from tests.support import (
    User,
    field_violations,
    issue_key,
    key_metadata,
    make_tenant,
    platform_admin,
    reason,
    register_user,
    stored_usage,
    unique,
)

Metadata = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Tenant:
    id: str
    owner: User
    writer: Metadata  # a key with usage:write
    reader: Metadata  # a key with usage:read


@pytest.fixture
async def tenant(server: tuple[NexusServer, int], channel: grpc.aio.Channel) -> Tenant:
    srv = server[0]
    owner = await register_user(channel)
    tenant_id = await make_tenant(srv, owner.user_id)
    writer = key_metadata(await issue_key(srv, tenant_id, ["usage:write"]))
    reader = key_metadata(await issue_key(srv, tenant_id, ["usage:read"]))
    return Tenant(tenant_id, owner, writer, reader)


def record(
    key: str, quantity: int = 1, metric: str = "emails_sent", **extra: object
) -> usage_record_pb2.UsageRecord:
    return usage_record_pb2.UsageRecord(metric=metric, quantity=quantity, idempotency_key=key, **extra)  # type: ignore[arg-type]


def ts(when: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(when)
    return stamp


async def stored(srv: NexusServer, tenant_id: str) -> tuple[int, int, int]:
    """(raw records, their quantity, the daily rollups' quantity) of the tenant."""
    return (await stored_usage(srv.db, tenant_id)).counts


async def test_each_record_has_its_own_outcome_and_a_retry_is_all_duplicates(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel, tenant: Tenant
) -> None:
    stub = rpc.UsageServiceStub(channel)
    now = datetime.now(UTC)
    batch = [record(f"k{i}", i + 1) for i in range(1000)]
    batch[500] = record("bad", 0)  # quantity 0: the one bad record
    first = await stub.RecordUsage(pb.RecordUsageRequest(records=batch), metadata=tenant.writer)
    assert (first.accepted, first.duplicates, first.rejected) == (999, 0, 1)
    (bad,) = first.rejections
    assert (bad.index, bad.idempotency_key, bad.reason) == (500, "bad", "INVALID_REQUEST")
    assert [v.field for v in bad.field_violations] == ["records[500].quantity"]
    expected = sum(i + 1 for i in range(1000)) - 501
    assert await stored(server[0], tenant.id) == (999, expected, expected)

    again = await stub.RecordUsage(pb.RecordUsageRequest(records=batch), metadata=tenant.writer)
    assert (again.accepted, again.duplicates, again.rejected) == (0, 999, 1)
    assert await stored(server[0], tenant.id) == (999, expected, expected)

    mixed = [
        record("k1", 999),  # the key again with another quantity
        record("x", metric="api_calls"),
        record("y", metric="nexus.internal"),
        record("old", timestamp=ts(now - timedelta(days=8))),
        record("ahead", timestamp=ts(now + timedelta(minutes=10))),
        record("dup-in-batch", 3),
        record("dup-in-batch", 3),
        record("dup-in-batch", 4),
        record("", 1),
        record(
            "props", properties=struct_pb2.Struct(fields={"n": struct_pb2.Value(number_value=float("nan"))})
        ),
    ]
    answer = await stub.RecordUsage(pb.RecordUsageRequest(records=mixed), metadata=tenant.writer)
    reasons = {r.index: r.reason for r in answer.rejections}
    assert reasons == {
        0: "IDEMPOTENCY_KEY_REUSED",
        1: "METRIC_RESERVED",
        2: "METRIC_RESERVED",
        3: "TIMESTAMP_OUT_OF_RANGE",
        4: "TIMESTAMP_OUT_OF_RANGE",
        7: "IDEMPOTENCY_KEY_REUSED",
        8: "INVALID_REQUEST",
        9: "INVALID_REQUEST",
    }
    assert (answer.accepted, answer.duplicates, answer.rejected) == (1, 1, 8)
    assert await stored(server[0], tenant.id) == (1000, expected + 3, expected + 3)


async def test_a_batch_is_refused_whole_only_when_it_is_empty_or_too_big(
    channel: grpc.aio.Channel, tenant: Tenant
) -> None:
    stub = rpc.UsageServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.RecordUsage(
            pb.RecordUsageRequest(records=[record(f"k{i}") for i in range(1001)]), metadata=tenant.writer
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason(raised.value) == "TOO_MANY_RECORDS"
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.RecordUsage(pb.RecordUsageRequest(), metadata=tenant.writer)
    assert (reason(raised.value), field_violations(raised.value)) == ("INVALID_REQUEST", ["records"])
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.RecordUsage(pb.RecordUsageRequest(records=[record("k")]), metadata=tenant.reader)
    assert reason(raised.value) == "MISSING_SCOPE"


async def test_concurrent_senders_with_overlapping_keys_count_every_key_once(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel, tenant: Tenant
) -> None:
    stub = rpc.UsageServiceStub(channel)

    async def sender(n: int) -> tuple[int, int]:
        accepted = duplicates = 0
        # Sender n sends keys n*5000 .. n*5000+9999: each key is sent by two senders.
        for part in range(10):
            start = n * 5000 + part * 1000
            batch = [record(f"key-{k}", k % 7 + 1) for k in range(start, start + 1000)]
            answer = await stub.RecordUsage(pb.RecordUsageRequest(records=batch), metadata=tenant.writer)
            assert answer.rejected == 0
            accepted += answer.accepted
            duplicates += answer.duplicates
        return accepted, duplicates

    results = await asyncio.gather(*(sender(n) for n in range(8)))
    unique_keys = range(0, 7 * 5000 + 10_000)
    assert sum(a for a, _ in results) == len(unique_keys)
    assert sum(d for _, d in results) == 80_000 - len(unique_keys)
    total = sum(k % 7 + 1 for k in unique_keys)
    assert await stored(server[0], tenant.id) == (len(unique_keys), total, total)
    current = await stub.GetCurrentUsage(
        pb.GetCurrentUsageRequest(tenant_id=tenant.id, metrics=["emails_sent"]), metadata=tenant.reader
    )
    assert current.metrics[0].used == total


async def quota_events(srv: NexusServer, tenant_id: str) -> list[tuple[str, int]]:
    async with srv.db.unit_of_work(readonly=True) as uow:
        rows = await uow.session.execute(
            select(events.c.type, events.c.data)
            .where(events.c.tenant_id == tenant_id, events.c.type.like("usage.%"))
            .order_by(events.c.sequence)
        )
        return [(t, int(d["used"])) for t, d in rows]


async def test_quota_events_fire_once_per_crossing_and_check_quota_sees_every_record(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel, tenant: Tenant
) -> None:
    stub = rpc.UsageServiceStub(channel)

    async def send(key: str, quantity: int) -> None:
        answer = await stub.RecordUsage(
            pb.RecordUsageRequest(records=[record(key, quantity, "ai_tokens")]), metadata=tenant.writer
        )
        assert answer.rejected == 0

    check = await stub.CheckQuota(
        pb.CheckQuotaRequest(tenant_id=tenant.id, metric="ai_tokens", quantity=100_000),
        metadata=tenant.reader,
    )
    assert (check.allowed, check.limit, check.used, check.remaining, check.overage) == (
        True,
        100_000,
        0,
        100_000,
        0,
    )
    assert check.enforcement == metric_usage_pb2.QUOTA_ENFORCEMENT_HARD_LIMIT
    await send("a", 79_999)
    assert await quota_events(server[0], tenant.id) == []
    await send("b", 1)  # 80%: the warning
    await send("b", 1)  # a retry: no second warning
    await send("c", 5)
    assert await quota_events(server[0], tenant.id) == [("usage.quota_warning", 80_000)]
    check = await stub.CheckQuota(
        pb.CheckQuotaRequest(tenant_id=tenant.id, metric="ai_tokens", quantity=20_000), metadata=tenant.reader
    )
    assert (check.allowed, check.used, check.remaining, check.overage) == (False, 80_005, 19_995, 5)
    await send("d", 30_000)  # past 100%: recorded anyway, and the exceeded event
    await send("e", 1)
    assert await quota_events(server[0], tenant.id) == [
        ("usage.quota_warning", 80_000),
        ("usage.quota_exceeded", 110_005),
    ]
    current = await stub.GetCurrentUsage(
        pb.GetCurrentUsageRequest(tenant_id=tenant.id), metadata=tenant.owner.metadata(tenant.id)
    )
    assert current.plan_id == "free"
    by_metric = {m.metric: m for m in current.metrics}
    tokens = by_metric["ai_tokens"]
    assert (tokens.used, tokens.included, tokens.remaining, tokens.overage) == (110_006, 100_000, 0, 10_006)
    assert tokens.projected_used >= tokens.used
    assert "api_calls" in by_metric  # a metric of the plan, used or not
    # Another tenant's key may not look.
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        other = await make_tenant(server[0], tenant.owner.user_id)
        await stub.CheckQuota(
            pb.CheckQuotaRequest(tenant_id=other, metric="ai_tokens"), metadata=tenant.reader
        )
    assert reason(raised.value) == "TENANT_ACCESS_DENIED"


async def test_history_has_one_point_a_day_with_no_gaps(channel: grpc.aio.Channel, tenant: Tenant) -> None:
    stub = rpc.UsageServiceStub(channel)
    now = datetime.now(UTC)
    records = [record("today", 5), record("two-days-ago", 7, timestamp=ts(now - timedelta(days=2)))]
    await stub.RecordUsage(pb.RecordUsageRequest(records=records), metadata=tenant.writer)
    history = await stub.GetUsageHistory(
        pb.GetUsageHistoryRequest(tenant_id=tenant.id, days=5), metadata=tenant.owner.metadata(tenant.id)
    )
    (series,) = history.series
    assert series.metric == "emails_sent" and series.total == 12
    assert [p.quantity for p in series.points] == [0, 0, 7, 0, 5]
    assert history.period.end_time.ToDatetime(tzinfo=UTC) > now
    empty = await stub.GetUsageHistory(
        pb.GetUsageHistoryRequest(tenant_id=tenant.id, metric="nothing_yet"), metadata=tenant.reader
    )
    assert [(s.metric, s.total, len(s.points)) for s in empty.series] == [("nothing_yet", 0, 30)]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetUsageHistory(
            pb.GetUsageHistoryRequest(tenant_id=tenant.id, days=366, metric="Bad-Name"),
            metadata=tenant.reader,
        )
    assert sorted(field_violations(raised.value)) == ["days", "metric"]


async def _messages(*batches: list[usage_record_pb2.UsageRecord]) -> AsyncIterator[pb.StreamUsageRequest]:
    for batch in batches:
        yield pb.StreamUsageRequest(records=batch)


async def test_stream_usage_commits_each_message_and_indexes_rejections_across_the_stream(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel, tenant: Tenant
) -> None:
    stub = rpc.UsageServiceStub(channel)
    answer = await stub.StreamUsage(
        _messages([record("s1"), record("s2")], [record("s3"), record("s4", 0)], [record("s1")]),
        metadata=tenant.writer,
    )
    assert (answer.messages_committed, answer.accepted, answer.duplicates, answer.rejected) == (3, 3, 1, 1)
    assert [(r.index, r.reason) for r in answer.rejections] == [(3, "INVALID_REQUEST")]
    assert [v.field for v in answer.rejections[0].field_violations] == ["records[3].quantity"]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.StreamUsage(_messages([record("s5")], [], [record("s6")]), metadata=tenant.writer)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (await stored(server[0], tenant.id))[0] == 4  # s5 stayed, s6 never came


async def test_overview_ranks_tenants_and_breaks_usage_down_by_plan(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel, tenant: Tenant
) -> None:
    stub = rpc.UsageServiceStub(channel)
    metric = unique("m").lower().replace("-", "_")
    await stub.RecordUsage(
        pb.RecordUsageRequest(records=[record("o1", 10**11, metric)]), metadata=tenant.writer
    )
    admin = await platform_admin(server[0], channel)
    overview = await stub.GetUsageOverview(
        pb.GetUsageOverviewRequest(metric=metric), metadata=admin.metadata()
    )
    assert overview.top_tenants[0].tenant_id == tenant.id
    assert (overview.top_tenants[0].quantity, overview.top_tenants[0].share) == (10**11, 1.0)
    assert overview.top_tenants[0].plan_id == "free"
    assert any(t.metric == metric and t.quantity == 10**11 for t in overview.totals)
    free = next(p for p in overview.plans if p.plan_id == "free")
    assert free.tenant_count >= free.active_tenant_count >= 1
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetUsageOverview(pb.GetUsageOverviewRequest(), metadata=tenant.owner.metadata(tenant.id))
    assert reason(raised.value) == "ROLE_REQUIRED"
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetUsageOverview(
            pb.GetUsageOverviewRequest(top_tenants_limit=101), metadata=admin.metadata()
        )
    assert field_violations(raised.value) == ["top_tenants_limit"]
