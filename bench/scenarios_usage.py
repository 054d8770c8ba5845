"""Issue 14's speed, on PostgreSQL.

- **usage-ingest**: RecordUsage batches of 1,000 records with fresh idempotency keys, from
  the client processes (2 by default, 4 batches in flight each), into one tenant on a plan
  without quotas. A call is a batch, so records/s is 1,000 × calls/s; the target line prints
  it. The server's CPU column is Nexus's only: PostgreSQL runs unpinned beside the clients.
- **usage-copy-floor**: the same rows written by a bare `COPY … FROM STDIN` of 1,000 rows per
  transaction into an unindexed table with usage_records' columns, from as many connections
  as there are client processes: what PostgreSQL itself takes, the store's own limit. Its
  "server" CPU is the PostgreSQL backends' (the Nexus server the row starts sits idle).
  usage-ingest is judged at ≥ 0.5× its throughput.
- **usage-metered-unary** and **usage-unmetered-unary**: apikey-unary's call
  (bench/scenarios_apikeys.py: VerifyApiKey, each worker its own key) on PostgreSQL, with
  metering on and off (NEXUS_USAGE_METERING=0). The metered row is judged at ≤ 1.05× the
  unmetered row's server CPU per call: what metering every call costs Nexus. On PostgreSQL
  the database's share of a flush runs in PostgreSQL's processes; on the SQLite default it
  runs in Nexus's own (bench/README.md has that pair's numbers).
- **usage-current** and **usage-current-half**: GetCurrentUsage of a tenant with usage of
  three metrics this period, by its own usage:read keys (one per worker), first closed loop
  (the peak), then open loop at half that peak, judged on p99 ≤ 1.5× the p99 of
  **usage-half-echo**, the bare echo server at the same rate. The half rate comes from a
  short probe before the row (or BENCH_USAGE_RATE).

The database is this module's own fresh `bench_<hex>` on BENCH_POSTGRES_URL's server (see
bench/postgres.py), made when a row first needs it and dropped at exit; without a reachable
PostgreSQL the rows are left out with a note on stderr. usage_records grows over a run's
rounds, as a real one does.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import threading
import time
import uuid
from array import array
from collections.abc import Awaitable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bench.halfpeak import HalfOfPeak, probe_peak
from bench.load import LoadOptions, LoadResult, Workload
from bench.postgres import BenchDatabase, SeedOnce, psycopg_url, reachable
from bench.procs import cpu_seconds, rss_bytes
from bench.scenarios_apikeys import KEYS, bench_keys, heavy_tenant, seed_keys
from bench.servers import ECHO, RunningServer, ServerSpec

BATCH = 1_000  # records per RecordUsage call: the proto's maximum
METRIC = "bench.tokens"
READERS = 64  # usage:read keys, one per worker (more than clients × concurrency)
RECORD = "/nexus.usage.v1.UsageService/RecordUsage"
CURRENT = "/nexus.usage.v1.UsageService/GetCurrentUsage"
FLOOR_TABLE = "bench_copy_floor"
COLUMNS = "tenant_id, idempotency_key, metric, quantity, time, properties, accept_time"
PROBE_SECONDS = 3.0


@dataclass(frozen=True)
class FreshBatches:
    """Each call records BATCH records under keys no call has used; a batch that is not
    accepted whole counts as a DATA_LOSS error, so a row that loses records shows it."""

    key: str
    size: int = BATCH

    def bind(self, channel: Any, worker: int) -> Any:
        import grpc

        from nexus.usage.v1 import usage_record_pb2 as record_pb
        from nexus.usage.v1 import usage_service_pb2 as pb

        call = channel.unary_unary(RECORD)
        metadata = (("authorization", f"Bearer {self.key}"),)
        prefix = f"{uuid.uuid4().hex[:12]}-{worker}"
        batches = itertools.count()
        record, request, response = record_pb.UsageRecord, pb.RecordUsageRequest, pb.RecordUsageResponse
        size = self.size

        async def once() -> None:
            n = next(batches)
            records = [
                record(metric=METRIC, quantity=1, idempotency_key=f"{prefix}-{n}-{i}") for i in range(size)
            ]
            answer = response.FromString(
                await call(request(records=records).SerializeToString(), metadata=metadata)
            )
            if answer.accepted != size:
                empty = grpc.aio.Metadata()
                raise grpc.aio.AioRpcError(
                    grpc.StatusCode.DATA_LOSS, empty, empty, f"{answer.accepted} of {size} accepted"
                )

        return once


@dataclass(frozen=True)
class CopyFloor:
    """`clients` connections, each COPYing BATCH fresh rows per transaction into FLOOR_TABLE
    as fast as PostgreSQL takes them; one call is one committed batch."""

    database_url: str
    tenant_id: str

    def bind(self, channel: Any, worker: int) -> Any:
        raise TypeError("the COPY floor is driven by its own threads, not bound to gRPC workers")

    def drive(self, server: RunningServer, options: LoadOptions) -> LoadResult:
        import psycopg

        conns = [psycopg.connect(psycopg_url(self.database_url)) for _ in range(options.clients)]
        backends = [conn.info.backend_pid for conn in conns]
        t_start = time.monotonic() + options.warmup
        t_end = t_start + options.duration
        latencies: list[array[float]] = [array("d") for _ in conns]
        failures: list[BaseException] = []

        def copy_until_the_end(index: int) -> None:
            conn, mine, prefix = conns[index], latencies[index], uuid.uuid4().hex[:12]
            try:
                for n in itertools.count():
                    began = time.monotonic()
                    if began >= t_end:
                        return
                    at = datetime.now(UTC).isoformat()
                    lines = "".join(
                        f"{self.tenant_id}\t{prefix}-{n}-{i}\t{METRIC}\t1\t{at}\t\\N\t{at}\n"
                        for i in range(BATCH)
                    )
                    with conn.cursor() as cur, cur.copy(f"COPY {FLOOR_TABLE} ({COLUMNS}) FROM STDIN") as copy:
                        copy.write(lines)
                    conn.commit()
                    done = time.monotonic()
                    if t_start <= done < t_end:
                        mine.append(done - began)
            except BaseException as error:  # reported below: the row fails
                failures.append(error)

        threads = [
            threading.Thread(target=copy_until_the_end, args=(i,), daemon=True) for i in range(len(conns))
        ]
        try:
            own0 = time.process_time()
            for thread in threads:
                thread.start()
            _sleep_until(t_start)
            cpu0, w0 = sum(cpu_seconds(pid) for pid in backends), time.monotonic()
            _sleep_until(t_end)
            cpu1, w1 = sum(cpu_seconds(pid) for pid in backends), time.monotonic()
            rss = sum(rss_bytes(pid) for pid in backends)
            for thread in threads:
                thread.join(60)
            if failures:
                raise RuntimeError(f"COPY failed: {failures[0]!r}")
            merged: array[float] = array("d", sorted(itertools.chain.from_iterable(latencies)))
            return LoadResult(
                len(merged), {}, w1 - w0, merged, cpu1 - cpu0, time.process_time() - own0, rss, options
            )
        finally:
            for conn in conns:
                conn.close()


@dataclass(frozen=True)
class CurrentUsage:
    """Worker n asks for its tenant's current usage with reader key n."""

    tenant_id: str
    readers: tuple[str, ...]

    def bind(self, channel: Any, worker: int) -> Any:
        from nexus.usage.v1 import usage_service_pb2 as pb

        call = channel.unary_unary(CURRENT)
        metadata = (("authorization", f"Bearer {self.readers[worker % len(self.readers)]}"),)
        request = pb.GetCurrentUsageRequest(tenant_id=self.tenant_id).SerializeToString()

        def once() -> Awaitable[Any]:
            return call(request, metadata=metadata)  # type: ignore[no-any-return]

        return once


def _sleep_until(when: float) -> None:
    while (left := when - time.monotonic()) > 0:
        time.sleep(left)


# --- one database for the usage rows, seeded once ----------------------------------------------


@dataclass(frozen=True)
class Seeded:
    writer: str  # usage:write key of the ingest tenant
    ingest_tenant: str
    read_tenant: str
    readers: tuple[str, ...]
    read_writer: str  # usage:write key of the read tenant, for its records


async def _seed(url: str) -> Seeded:
    import psycopg

    db, ingest_tenant = await heavy_tenant(url, "bench-ingest")
    try:
        async with db.unit_of_work() as uow:
            [writer] = await bench_keys(uow, ingest_tenant, ["ingest"], ["usage:write"])
    finally:
        await db.dispose()
    db, read_tenant = await heavy_tenant(url, "bench-current")
    try:
        async with db.unit_of_work() as uow:
            readers = await bench_keys(
                uow, read_tenant, [f"reader-{i}" for i in range(READERS)], ["usage:read"]
            )
            [read_writer] = await bench_keys(uow, read_tenant, ["writer"], ["usage:write"])
    finally:
        await db.dispose()
    with psycopg.connect(psycopg_url(url)) as conn:
        # LIKE copies the columns and NOT NULLs only: no primary key, no index.
        conn.execute(f"CREATE TABLE {FLOOR_TABLE} (LIKE usage_records)")
        conn.commit()
    return Seeded(writer, ingest_tenant, read_tenant, tuple(readers), read_writer)


DB = BenchDatabase()
POSTGRES = DB.server_spec()
_SEEDED = SeedOnce("the usage tenants and keys", _seed)
_UNARY = SeedOnce(f"{KEYS} API keys", seed_keys)


class _Unmetered(Mapping[str, Any]):
    """The usage database (made on first use, as POSTGRES's) with metering off."""

    def __getitem__(self, name: str) -> Any:
        return {**POSTGRES.settings, "usage_metering": False}[name]

    def __iter__(self) -> Iterator[str]:
        return iter(("database_url", "usage_metering"))

    def __len__(self) -> int:
        return 2


UNMETERED = ServerSpec("nexus", settings=_Unmetered())


def seed_unary(server: RunningServer) -> Workload:
    return _UNARY.get(server.database_url)


def seed_ingest(server: RunningServer) -> Workload:
    return FreshBatches(_SEEDED.get(server.database_url).writer)


def seed_floor(server: RunningServer) -> Workload:
    return CopyFloor(server.database_url, _SEEDED.get(server.database_url).ingest_tenant)


def seed_current(server: RunningServer) -> Workload:
    """Give the read tenant usage of three metrics (the same keys every time, so repeats
    are duplicates), then warm the fresh server's pool."""
    seeded = _SEEDED.get(server.database_url)
    workload = CurrentUsage(seeded.read_tenant, seeded.readers)
    asyncio.run(_record_and_warm(server.address, seeded, workload))
    return workload


async def _record_and_warm(address: str, seeded: Seeded, workload: CurrentUsage) -> None:
    import grpc

    from nexus.usage.v1 import usage_record_pb2 as record_pb
    from nexus.usage.v1 import usage_service_pb2 as pb

    records = [
        record_pb.UsageRecord(metric=metric, quantity=1_000 + i, idempotency_key=f"seed-{metric}-{i}")
        for metric in ("ai_tokens", "bench.storage", METRIC)
        for i in range(100)
    ]
    async with grpc.aio.insecure_channel(address) as channel:
        record = channel.unary_unary(RECORD)
        metadata = (("authorization", f"Bearer {seeded.read_writer}"),)
        await record(pb.RecordUsageRequest(records=records).SerializeToString(), metadata=metadata)
        calls = [workload.bind(channel, w) for w in range(32)]
        for _ in range(20):
            await asyncio.gather(*(call() for call in calls))


HALF = HalfOfPeak(
    "BENCH_USAGE_RATE", "usage-current-half", lambda: probe_peak(POSTGRES, seed_current, PROBE_SECONDS)
)


def scenarios() -> list[Any]:
    """Scenario and Target are imported here: client processes unpickle the workloads by
    importing this module, and bench.scenarios imports this one."""
    from bench.scenarios import HEALTH_CHECK, Scenario, Target

    @dataclass(frozen=True)
    class HalfPeakTarget(Target):
        def describe(self, baseline: str) -> str:
            return f"{super().describe(baseline)} {HALF.describe()}"

    @dataclass(frozen=True)
    class RecordsTarget(Target):
        """Prints the records/s the ratio stands for."""

        def measure(self, result: LoadResult, baseline: LoadResult) -> float:
            ratio = super().measure(result, baseline)
            print(
                f"bench: usage-ingest {result.throughput * BATCH:,.0f} records/s, "
                f"bare COPY {baseline.throughput * BATCH:,.0f} records/s",
                file=sys.stderr,
            )
            return ratio

    why = reachable(DB.server_url)
    if why:
        print(
            f"bench: usage rows left out: {why}; they need PostgreSQL (BENCH_POSTGRES_URL)", file=sys.stderr
        )
        return []
    return [
        Scenario(
            "usage-metered-unary",
            "apikey-unary's VerifyApiKey on PostgreSQL, every call metered (issue 14)",
            POSTGRES,
            prepare=seed_unary,
            targets=(Target("cpu_per_call", "<=", 1.05, source="issue 14", versus="usage-unmetered-unary"),),
        ),
        Scenario(
            "usage-unmetered-unary",
            "the same with metering off (NEXUS_USAGE_METERING=0)",
            UNMETERED,
            prepare=seed_unary,
        ),
        Scenario(
            "usage-ingest",
            f"RecordUsage, {BATCH:,} fresh records per call, PostgreSQL (issue 14)",
            POSTGRES,
            prepare=seed_ingest,
            load={"concurrency": 4},
            targets=(RecordsTarget("throughput", ">=", 0.5, source="issue 14", versus="usage-copy-floor"),),
        ),
        Scenario(
            "usage-copy-floor",
            f"bare COPY of {BATCH:,} such rows per transaction into an unindexed table: the store's limit",
            POSTGRES,  # an idle Nexus: it only makes and migrates the database
            prepare=seed_floor,
        ),
        Scenario(
            "usage-current",
            "GetCurrentUsage of a tenant with three metrics, PostgreSQL: the peak (issue 14)",
            POSTGRES,
            prepare=seed_current,
        ),
        Scenario(
            "usage-current-half",
            "GetCurrentUsage, open loop at half the peak (issue 14)",
            POSTGRES,
            prepare=seed_current,
            load=HALF,
            targets=(HalfPeakTarget("p99", "<=", 1.5, source="issue 14", versus="usage-half-echo"),),
        ),
        Scenario(
            "usage-half-echo",
            "the bare echo server at usage-current-half's rate: the latency floor there",
            ECHO,
            HEALTH_CHECK,
            load=HALF,
        ),
    ]
