"""Issue 5's speed.

- **apikey-unary**: an API-key-authenticated, rate-limited unary RPC against the bare echo
  (≥ 0.75× its throughput, ≤ 1.33× its server CPU per call). The call is VerifyApiKey on the
  caller's own key with `rate_limit_cost=0`, the cheapest such RPC: authentication
  (checksum, cached key, constant-time digest compare), tenant status, the rate-limit layer
  (key and tenant limits charged, IETF fields sent), the access log line, and a servicer
  that reads no database. Each worker has its own key so no key's 100,000/min ceiling is
  what limits the run; the tenant's limit is lifted by an override (data), as an operator
  would for a heavy tenant.
- **apikey-verify-100k** and **apikey-verify-100k-half**: VerifyApiKey of a key drawn at
  random from 100,000 keys of one tenant in PostgreSQL (each worker authenticated by its own
  key of that tenant; each verified key charged one call), first closed loop (the peak),
  then open loop at half that peak, judged on p99 ≤ 2 ms. A key's record is cached for 10 s,
  so at a few thousand calls/s most calls (over 80%) find it uncached and read PostgreSQL:
  this pair measures the database path, not the cache. BENCH_APIKEYS_ACTIVE=N presents only
  N of the keys (say 2000: a hot set that stays cached, the table still 100k). As with
  tenants-check-half, the half row's rate comes from a short closed-loop probe just before
  it (or BENCH_APIKEYS_RATE).
- **apikey-half-echo**: the bare echo server at that same rate: the p99 that the load
  generator, gRPC and the machine give a server that does nothing.

The PostgreSQL database is a fresh `bench_<hex>` on the server of BENCH_POSTGRES_URL
(default postgresql+psycopg://postgres@127.0.0.1:5432/postgres, trust auth), created when a
100k row first starts its server, seeded once with COPY and dropped when the bench exits.
Without a reachable PostgreSQL those rows are left out, with a note on stderr.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bench.halfpeak import HalfOfPeak, probe_peak
from bench.load import Workload
from bench.postgres import BenchDatabase, SeedOnce, psycopg_url, reachable
from bench.servers import ECHO, NEXUS, RunningServer

KEYS = 256  # callers' keys: more than any run's workers (clients × concurrency)
VERIFY = "/nexus.apikey.v1.ApiKeyService/VerifyApiKey"
POPULATION = 100_000  # keys in PostgreSQL for the 100k rows
PROBE_SECONDS = 3.0
UNLIMITED = "enterprise"  # a built-in plan without quotas


@dataclass(frozen=True)
class OwnKeyVerify:
    """Each worker verifies its own key with it (cost 0), authenticated by that same key."""

    keys: tuple[str, ...]

    def bind(self, channel: Any, worker: int) -> Any:
        from nexus.apikey.v1 import apikey_service_pb2 as pb

        key = self.keys[worker % len(self.keys)]
        call = channel.unary_unary(VERIFY)
        request = pb.VerifyApiKeyRequest(key=key, rate_limit_cost=0).SerializeToString()
        metadata = (("authorization", f"Bearer {key}"),)

        def once() -> Awaitable[Any]:
            return call(request, metadata=metadata)  # type: ignore[no-any-return]

        return once


@dataclass(frozen=True)
class PopulationVerify:
    """Worker n, authenticated by caller key n, verifies a key drawn at random from the
    population on every call (seeded by n, so runs repeat)."""

    callers: tuple[str, ...]
    keys: tuple[str, ...]
    active: int = POPULATION  # how many of the keys are ever presented (BENCH_APIKEYS_ACTIVE)

    def bind(self, channel: Any, worker: int) -> Any:
        import random

        from nexus.apikey.v1 import apikey_service_pb2 as pb

        call = channel.unary_unary(VERIFY)
        metadata = (("authorization", f"Bearer {self.callers[worker % len(self.callers)]}"),)
        pick, keys, request = random.Random(worker).choice, self.keys[: self.active], pb.VerifyApiKeyRequest

        def once() -> Awaitable[Any]:
            return call(request(key=pick(keys)).SerializeToString(), metadata=metadata)  # type: ignore[no-any-return]

        return once


# --- apikey-unary: a few keys in the server's own SQLite file ----------------------------------


def seed_api_keys(server: RunningServer) -> Workload:
    return asyncio.run(seed_keys(server.database_url))


async def seed_keys(url: str) -> Workload:
    from nexus_server.apikeys.workflows import issue_key

    db, tenant = await heavy_tenant(url, "bench-keys")
    try:
        keys = []
        async with db.unit_of_work() as uow:
            for index in range(KEYS):
                _, full_key = await issue_key(
                    uow,
                    tenant_id=tenant,
                    name=f"bench-{index}",
                    scopes=["auth:introspect"],
                    rate_limit_per_minute=100_000,
                )
                keys.append(full_key)
        return OwnKeyVerify(tuple(keys))
    finally:
        await db.dispose()


async def heavy_tenant(url: str, slug: str) -> tuple[Any, str]:
    """A tenant whose tenant-wide limit is lifted (an override) and whose plan has no quota,
    and the open database. On the free plan a bench's keys would be refused with
    QUOTA_EXCEEDED after 10,000 calls; an operator moves a heavy tenant to such a plan."""
    from sqlalchemy import update

    from nexus_server.auth.revocations import Revocations
    from nexus_server.common.ids import new_id
    from nexus_server.db.engine import create_async
    from nexus_server.db.uow import Database
    from nexus_server.ratelimit.overrides import set_override
    from nexus_server.tenants.tables import tenants
    from nexus_server.tenants.workflows import create_tenant

    db = Database(create_async(url))
    async with db.unit_of_work() as uow:
        tenant = await create_tenant(uow, owner_user_id=new_id("usr"), slug=slug, display_name="Bench")
        await set_override(uow, Revocations(db), "tenant", tenant.id, 10_000_000)
        await uow.session.execute(update(tenants).where(tenants.c.id == tenant.id).values(plan_id=UNLIMITED))
    return db, tenant.id


async def bench_keys(uow: Any, tenant_id: str, names: list[str], scopes: list[str]) -> list[str]:
    """One key per name, at a per-key limit no bench run reaches; the full keys, in order."""
    from nexus_server.apikeys.workflows import issue_key

    keys = []
    for name in names:
        _, key = await issue_key(
            uow, tenant_id=tenant_id, name=name, scopes=scopes, rate_limit_per_minute=100_000
        )
        keys.append(key)
    return keys


# --- the 100k rows: a PostgreSQL database created on first use, seeded once -------------------


DB = BenchDatabase()
POSTGRES = DB.server_spec()


def seed_population(server: RunningServer) -> Workload:
    """Seed the database (once per bench run), then put this fresh server through a burst of
    calls, so the row measures the steady state rather than its pool opening connections."""
    workload = _POPULATION.get(server.database_url)
    asyncio.run(_warm(server.address, workload))
    return workload


async def _warm(address: str, workload: PopulationVerify, workers: int = 32, rounds: int = 30) -> None:
    import grpc

    async with grpc.aio.insecure_channel(address) as channel:
        calls = [workload.bind(channel, w) for w in range(workers)]
        for _ in range(rounds):
            await asyncio.gather(*(call() for call in calls))


async def _seed_population(url: str) -> PopulationVerify:
    import psycopg

    from nexus_server.apikeys import key_format

    db, tenant = await heavy_tenant(url, "bench-100k")
    await db.dispose()
    now = datetime.now(UTC)

    def row(full_key: str, name: str, scopes: list[str], per_minute: int) -> tuple[Any, ...]:
        key_id = full_key[: key_format.ID_LENGTH]
        return (
            key_id, tenant, name, json.dumps(scopes), "live", per_minute, key_format.start_of(full_key),
            key_format.digest(full_key), "usr_bench", now, now,
        )  # fmt: skip

    callers = [key_format.new_full_key(key_format.new_key_id()) for _ in range(KEYS)]
    keys = [key_format.new_full_key(key_format.new_key_id()) for _ in range(POPULATION)]
    columns = (
        "id, tenant_id, name, scopes, environment, rate_limit_per_minute, start, secret_hash, "
        "created_by, create_time, update_time"
    )
    with psycopg.connect(psycopg_url(url)) as conn:
        with conn.cursor() as cur, cur.copy(f"COPY api_keys ({columns}) FROM STDIN") as copy:
            for index, key in enumerate(callers):
                copy.write_row(row(key, f"caller-{index}", ["auth:introspect"], 100_000))
            for index, key in enumerate(keys):
                copy.write_row(row(key, f"key-{index}", ["usage:read"], 100))
        conn.commit()
        conn.execute("ANALYZE api_keys")
    active = int(os.environ.get("BENCH_APIKEYS_ACTIVE", "") or POPULATION)
    return PopulationVerify(tuple(callers), tuple(keys), max(1, min(active, POPULATION)))


_POPULATION = SeedOnce(f"{POPULATION} API keys", _seed_population)
HALF = HalfOfPeak(
    "BENCH_APIKEYS_RATE",
    "apikey-verify-100k-half",
    lambda: probe_peak(POSTGRES, seed_population, PROBE_SECONDS),
)


def scenarios() -> list[Any]:
    """This capability's scenarios. Scenario and Target are imported here, not at the top:
    client processes unpickle the workloads by importing this module, and bench.scenarios
    imports this one."""
    from bench.scenarios import HEALTH_CHECK, Scenario, Target

    @dataclass(frozen=True)
    class HalfPeakTarget(Target):
        """Says which rate the row ran at, and why."""

        def describe(self, baseline: str) -> str:
            return f"{super().describe(baseline)} {HALF.describe()}"

    rows = [
        Scenario(
            "apikey-unary",
            "VerifyApiKey (cost 0) authenticated by the same API key; key + tenant limits (issue 5)",
            NEXUS,
            prepare=seed_api_keys,
            targets=(
                Target("throughput", ">=", 0.75, source="issues 5 and 18: in every one of 5 rounds"),
                Target("cpu_per_call", "<=", 1.33, source="issues 5 and 18: in every one of 5 rounds"),
            ),
        ),
    ]
    why = reachable(DB.server_url)
    if why:
        print(
            f"bench: apikey-verify-100k rows left out: {why}; they need PostgreSQL "
            "(set BENCH_POSTGRES_URL to a server where databases may be created)",
            file=sys.stderr,
        )
        return rows
    shape = f"{POPULATION // 1000}k keys in PostgreSQL"
    return [
        *rows,
        Scenario(
            "apikey-verify-100k",
            f"VerifyApiKey of a different key each call, {shape}: the peak (issue 5)",
            POSTGRES,
            prepare=seed_population,
        ),
        Scenario(
            "apikey-verify-100k-half",
            f"VerifyApiKey of a different key each call, {shape}: open loop at half the peak (issue 5)",
            POSTGRES,
            prepare=seed_population,
            load=HALF,
            # Issue 18 restated issue 5's 2 ms, which no server here meets, as a ratio to the floor.
            targets=(HalfPeakTarget("p99", "<=", 1.5, source="issue 18", versus="apikey-half-echo"),),
        ),
        Scenario(
            "apikey-half-echo",
            "the bare echo server at apikey-verify-100k-half's rate: this harness's latency floor there",
            ECHO,
            HEALTH_CHECK,
            load=HALF,
        ),
    ]
