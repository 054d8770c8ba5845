"""Outbound webhook delivery throughput: deliveries/s from one server process to a local
receiver that answers at once, 100 endpoints, ≥ 0.5× a bare httpx client POSTing the same
bodies to the same receiver in the same run.

    webhooks-bare      the floor the target names: bench/webhook_bare.py, one
                       httpx.AsyncClient made as Nexus's Sender makes its own (one pool for all
                       endpoints), 100 tasks each POSTing its endpoint's bodies in order
    webhooks-bare-clients  the same with one such client per endpoint: no pool holds more
                       than one connection
    webhooks-deliver   Nexus on its SQLite default: 100 endpoints, the events published with
                       PublishEvent, the Deliverer fanning out, signing, POSTing, recording;
                       judged against both floors
    webhooks-deliver-pg  the same on PostgreSQL (BENCH_POSTGRES_URL; left out without one)

Why two floors: httpcore 1.0's pool (httpx's) re-examines every pooled connection, polling
each idle socket, for each queued request on every request and every release, and offers a
freed connection to every queued request at once (encode/httpcore#1035). With 100
connections to one origin and 100 requests queued, the single shared client spends most of
its CPU there (7-14 ms a request on the 2-core machine, against ~0.7 ms with a client per
endpoint). So `webhooks-bare` is a floor only in the sense of the target's wording; Nexus,
whose endpoint tasks spend part of their time in the database, queues fewer requests in the
same pool and comes out ahead of it. `webhooks-bare-clients` is what httpx itself costs per
POST here: the second target line, the one a change can still be judged by.

Both rows are driven by bench/webhook_load.py: a receiver process on the client CPUs
counts every request per path; the sender (the measured "server", pinned as usual) gets a
warm-up round of events to every endpoint and then the measured round; deliveries/s is
100 × events ÷ (the last arrival − the first append), `srv µs/call` the sender's CPU per
delivery (for Nexus: PublishEvent, fan-out, claims, signing, the POSTs and recording the
attempts up to the last arrival), `cli cores` the receiver's and publisher's CPU. The floors
run on uvloop, as Nexus does by default.

A tenant holds at most 50 endpoints (rules.MAX_ENDPOINTS), so Nexus's 100 are two tenants'
50 each, made with workflows.create (the sealer of the server's settings), each tenant
publishing the same number of events; every endpoint receives every event of its tenant.
The server runs with webhooks_allow_private_urls (NEXUS_WEBHOOKS_ALLOW_PRIVATE_URLS) so it
may call the loopback receiver, and otherwise Nexus's defaults (NEXUS_WEBHOOKS_CONCURRENCY
128: all 100 endpoints at once).

BENCH_WEBHOOK_EVENTS sets the measured events per endpoint (default 50: 5,000 deliveries;
`--quick`: 10).
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from bench.load import LoadOptions, _expect
from bench.postgres import BenchDatabase, reachable
from bench.procs import client_process, reap
from bench.servers import RunningServer, ServerSpec
from bench.webhook_load import EVENT_SOURCE, EVENT_TYPE, WebhookPlan, WebhookResult, event_data, run_webhooks

ENDPOINTS = 100
PER_TENANT = 50  # rules.MAX_ENDPOINTS
EVENTS = 50
QUICK_EVENTS = 10
WARMUP_EVENTS = 5
PUBLISHERS = 64  # PublishEvent calls in flight (the appender groups up to 64 a commit)
PUBLISH = "/nexus.events.v1.EventsService/PublishEvent"
# Each round first publishes one event per tenant, one at a time, then the rest all at once:
# the keys' records are then fresh (cached 10 s) for the burst, so it measures delivery, not
# key reads. (This bench found the verifier race fixed in apikeys/verifier.py: a cache miss
# arriving as the only reader finished waited for some other miss; PublishEvent hung 125 s.)
_RECORD_TIMEOUT = 60.0

# The floors run on uvloop, as Nexus does by default (NEXUS_EVENT_LOOP).
BARE = ServerSpec("webhooks-bare", settings={"event_loop": "uvloop"})
BARE_CLIENTS = ServerSpec("webhooks-bare", settings={"event_loop": "uvloop", "client_per_endpoint": True})
NEXUS_WEBHOOKS = ServerSpec("nexus", settings={"webhooks_allow_private_urls": True})


@dataclass(frozen=True)
class Seeded:
    database_url: str
    tenants: tuple[str, ...]
    publish_keys: tuple[str, ...]  # one per tenant, events:publish


@dataclass(frozen=True)
class Webhooks:
    """A webhook workload: `drive` replaces the unary load generator (bench/__main__.py)."""

    seeded: Seeded | None  # None for the bare floor

    def bind(self, channel: Any, worker: int) -> Any:
        raise TypeError("a webhook workload is driven by bench.webhook_load, not bound to workers")

    def drive(self, server: RunningServer, options: LoadOptions) -> WebhookResult:
        quick = options.duration <= 1.0  # `--quick`
        events = int(os.environ.get("BENCH_WEBHOOK_EVENTS", QUICK_EVENTS if quick else EVENTS))
        plan = WebhookPlan(ENDPOINTS, events, WARMUP_EVENTS)
        side: Any
        if self.seeded is None:
            from bench.webhook_bare import BareSide

            per_endpoint = bool(server.spec.settings.get("client_per_endpoint"))
            side = BareSide(server.port, plan.warmup_events + plan.events, per_endpoint)
        else:
            side = NexusSide(server.address, self.seeded, options.client_cpus)
        try:
            result = run_webhooks(server.pid, side, plan, options, server.log_tail)
        finally:
            side.close()
        if quick:
            result.notes.append(f"QUICK RUN: {events} events per endpoint instead of {EVENTS}")
        return result


class NexusSide:
    """Nexus's end (bench.webhook_load.Side): endpoints written with workflows.create, events
    published by a client process over gRPC, deliveries read back from the database."""

    def __init__(self, address: str, seeded: Seeded, cpus: str):
        self.seeded = seeded
        self.procs: list[Any] = []
        self.conns: list[Connection] = []
        ctx = mp.get_context("spawn")
        mine, theirs = ctx.Pipe()
        proc = ctx.Process(
            target=_publisher_main, args=(theirs, address, seeded, cpus), name="bench-publisher", daemon=True
        )
        proc.start()
        theirs.close()
        self.procs.append(proc)
        self.conns.append(mine)
        self.conn = mine
        _expect(mine, "ready", 60.0)
        self.recorded_after = float("nan")
        self.published = 0

    def setup(self, urls: Sequence[str]) -> None:
        asyncio.run(_create_endpoints(self.seeded, urls))

    def start(self, first: int, last: int) -> None:
        self.conn.send(("publish", first, last))

    def finish(self, expected: int) -> tuple[dict[str, int], float]:
        began = time.monotonic()
        report = _expect(self.conn, "published", 60.0)
        self.published = report["published"]
        errors = {f"publish {code}": n for code, n in report["errors"].items()}
        recorded = 0
        while (recorded := _succeeded(self.seeded)) < expected:
            if time.monotonic() - began > _RECORD_TIMEOUT:
                errors["not recorded as succeeded"] = expected - recorded
                break
            time.sleep(0.01)
        self.recorded_after = time.monotonic() - began
        return errors, report["cpu"]

    def notes(self) -> list[str]:
        tenants = len(self.seeded.tenants)
        return [
            f"Nexus: {tenants} tenants × {ENDPOINTS // tenants} endpoints, {self.published} PublishEvent "
            f"calls in the round ({PUBLISHERS} in flight); every delivery recorded 'succeeded' "
            f"{self.recorded_after:.2f} s after the last arrival (not in the window)",
        ]

    def diagnose(self) -> str:
        published = "the publisher has not answered"
        if self.conn.poll(5.0):
            report = self.conn.recv()
            published = f"the publisher: {report}"
        from sqlalchemy import bindparam, create_engine, text

        engine = create_engine(_sync_url(self.seeded.database_url))
        try:
            query = text(
                "SELECT tenant_id, status, count(*) FROM webhook_deliveries WHERE tenant_id IN :tenants "
                "GROUP BY tenant_id, status"
            ).bindparams(bindparam("tenants", expanding=True))
            cursors = text(
                "SELECT tenant_id, min(cursor), max(cursor), count(lease_owner) FROM webhook_endpoints "
                "WHERE tenant_id IN :tenants GROUP BY tenant_id"
            ).bindparams(bindparam("tenants", expanding=True))
            with engine.connect() as conn:
                rows = conn.execute(query, {"tenants": list(self.seeded.tenants)}).all()
                ends = conn.execute(cursors, {"tenants": list(self.seeded.tenants)}).all()
        finally:
            engine.dispose()
        return f"{published}; deliveries by tenant and status: {rows}; endpoints' cursors, leases: {ends}"

    def close(self) -> None:
        if self.procs and self.procs[0].is_alive():
            self.conn.send(("stop",))
        reap(self.procs, self.conns)


def _sync_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.drivername == "sqlite+aiosqlite":
        parsed = parsed.set(drivername="sqlite")
    return parsed.render_as_string(hide_password=False)


def _succeeded(seeded: Seeded) -> int:
    """Deliveries of the row's tenants recorded as succeeded."""
    from sqlalchemy import bindparam, create_engine, text

    engine = create_engine(_sync_url(seeded.database_url))
    try:
        query = text(
            "SELECT count(*) FROM webhook_deliveries WHERE status = 'succeeded' AND tenant_id IN :tenants"
        ).bindparams(bindparam("tenants", expanding=True))
        with engine.connect() as conn:
            return int(conn.execute(query, {"tenants": list(seeded.tenants)}).scalar_one())
    finally:
        engine.dispose()


async def _seed(url: str) -> Seeded:
    from bench.scenarios_apikeys import bench_keys, heavy_tenant

    tenants, keys = [], []
    for index in range(-(-ENDPOINTS // PER_TENANT)):
        # Unique slugs: a PostgreSQL database outlives a round.
        db, tenant_id = await heavy_tenant(url, f"bench-webhooks-{index}-{uuid.uuid4().hex[:8]}")
        try:
            async with db.unit_of_work() as uow:
                [key] = await bench_keys(uow, tenant_id, ["webhook-publisher"], ["events:publish"])
        finally:
            await db.dispose()
        tenants.append(tenant_id)
        keys.append(key)
    return Seeded(url, tuple(tenants), tuple(keys))


async def _create_endpoints(seeded: Seeded, urls: Sequence[str]) -> None:
    """Endpoint n (urls[n]) in tenant n // PER_TENANT, as CreateWebhookEndpoint makes it."""
    from nexus_server.config import Settings
    from nexus_server.db.engine import create_async
    from nexus_server.db.uow import Database
    from nexus_server.events.webhooks import secrets, workflows
    from nexus_server.events.webhooks.rules import EndpointFields

    sealer = secrets.sealer(Settings())  # the bench's servers run on Settings()'s secret key
    db = Database(create_async(seeded.database_url))
    try:
        async with db.unit_of_work() as uow:
            for n, url in enumerate(urls):
                fields = EndpointFields(url, types=(), sources=(), description=f"bench {n}", enabled=True)
                await workflows.create(uow, sealer, seeded.tenants[n // PER_TENANT], fields)
    finally:
        await db.dispose()


def prepare_nexus(server: RunningServer) -> Webhooks:
    return Webhooks(asyncio.run(_seed(server.database_url)))


def prepare_bare(server: RunningServer) -> Webhooks:
    return Webhooks(None)


# ---- the publisher process -------------------------------------------------------------------


def _publisher_main(conn: Connection, address: str, seeded: Seeded, cpus: str) -> None:
    client_process(conn, cpus, lambda: asyncio.run(_publisher(conn, address, seeded)))


async def _publisher(conn: Connection, address: str, seeded: Seeded) -> None:
    import grpc

    channel = grpc.aio.insecure_channel(address)
    try:
        await asyncio.wait_for(channel.channel_ready(), 30)
        call = channel.unary_unary(PUBLISH)
        conn.send({"kind": "ready"})
        while True:
            command = await asyncio.to_thread(conn.recv)
            if command[0] != "publish":
                return
            conn.send(await _publish_round(call, seeded, command[1], command[2]))
    finally:
        await channel.close()


async def _publish_round(call: Any, seeded: Seeded, first: int, last: int) -> dict[str, Any]:
    """Events first..last-1 to every tenant, PUBLISHERS calls in flight; each tenant's first
    event of the round alone, one tenant after the other (the comment at PUBLISH says why)."""
    import grpc

    from nexus.events.v1 import events_service_pb2 as pb

    requests: list[tuple[bytes, tuple[tuple[str, str], ...]]] = []
    for key in seeded.publish_keys:
        metadata = (("authorization", f"Bearer {key}"),)
        for n in range(first, last):
            request = pb.PublishEventRequest(
                type=EVENT_TYPE, source=EVENT_SOURCE, subject=event_data(n)["deal_id"]
            )
            request.data.update(event_data(n))
            requests.append((request.SerializeToString(), metadata))
    errors: Counter[str] = Counter()
    in_flight = asyncio.Semaphore(PUBLISHERS)
    cpu0 = time.process_time()

    async def publish(request: bytes, metadata: tuple[tuple[str, str], ...]) -> None:
        async with in_flight:
            try:
                await call(request, metadata=metadata)
            except grpc.aio.AioRpcError as error:
                errors[error.code().name] += 1

    per_tenant = last - first
    for tenant in range(len(seeded.publish_keys)):
        await publish(*requests[tenant * per_tenant])
    rest = [r for index, r in enumerate(requests) if index % per_tenant]
    await asyncio.gather(*(publish(r, m) for r, m in rest))
    published = len(requests) - sum(errors.values())
    return {
        "kind": "published",
        "published": published,
        "errors": dict(errors),
        "cpu": time.process_time() - cpu0,
    }


# ---- PostgreSQL ------------------------------------------------------------------------------


DB = BenchDatabase()


class _OnPostgres(Mapping[str, Any]):
    """This module's PostgreSQL database (made on first use) and loopback receivers allowed."""

    def __getitem__(self, name: str) -> Any:
        if name == "database_url":
            return DB.database_url()
        if name == "webhooks_allow_private_urls":
            return True
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(("database_url", "webhooks_allow_private_urls"))

    def __len__(self) -> int:
        return 2


def scenarios() -> list[Any]:
    """Scenario and Target are imported here: bench.scenarios imports this module."""
    from bench.scenarios import Scenario, Target

    targets = (
        Target("throughput", ">=", 0.5, source="webhook delivery target", versus="webhooks-bare"),
        Target(
            "throughput",
            ">=",
            0.5,
            source="the same against httpx without a shared pool",
            versus="webhooks-bare-clients",
        ),
    )
    rows = [
        Scenario(
            "webhooks-bare",
            f"the floor: a bare httpx.AsyncClient POSTing the same bodies, {ENDPOINTS} endpoints in parallel",
            BARE,
            prepare=prepare_bare,
        ),
        Scenario(
            "webhooks-bare-clients",
            f"the same with one httpx.AsyncClient per endpoint (no shared pool): {ENDPOINTS} endpoints",
            BARE_CLIENTS,
            prepare=prepare_bare,
        ),
        Scenario(
            "webhooks-deliver",
            f"outbound webhooks, {ENDPOINTS} endpoints on a local receiver answering at once: deliveries/s",
            NEXUS_WEBHOOKS,
            prepare=prepare_nexus,
            targets=targets,
        ),
    ]
    why = reachable(DB.server_url)
    if why:
        print(f"bench: webhooks-deliver-pg left out: {why} (BENCH_POSTGRES_URL)", file=sys.stderr)
        return rows
    rows.append(
        Scenario(
            "webhooks-deliver-pg",
            f"the same on PostgreSQL: {ENDPOINTS} endpoints, deliveries/s",
            ServerSpec("nexus", settings=_OnPostgres()),
            prepare=prepare_nexus,
            targets=targets,
        )
    )
    return rows
