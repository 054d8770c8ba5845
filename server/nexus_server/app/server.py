"""Assemble the gRPC server: `create_server(settings) -> (server, port)`, apart from `serve()`."""

from __future__ import annotations

import asyncio
import gc
import logging
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry

from nexus_server import contract
from nexus_server.app.context import AppContext
from nexus_server.app.handlers import service_handler
from nexus_server.app.wiring import Capabilities, build_capabilities
from nexus_server.auth.revocations import Revocations
from nexus_server.common import pagination, periodic
from nexus_server.common.clock import Clock, SystemClock
from nexus_server.config import Settings
from nexus_server.db.engine import create_async
from nexus_server.db.uow import Database
from nexus_server.interceptors.auth import Authentication
from nexus_server.interceptors.chain import Chain
from nexus_server.interceptors.metrics import Metrics
from nexus_server.interceptors.request_log import RequestLog
from nexus_server.interceptors.streams import StreamGuard

log = logging.getLogger("nexus.server")

# Keepalive and message limits: streams live for hours behind Envoy, so let clients ping.
_OPTIONS = [
    ("grpc.max_receive_message_length", 8 * 1024 * 1024),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
    ("grpc.so_reuseport", 0),
]


@dataclass
class NexusServer:
    settings: Settings
    grpc_server: grpc.aio.Server
    db: Database
    chain: Chain
    health: Any  # grpc_health.v1.health.aio.HealthServicer
    registry: CollectorRegistry
    ctx: AppContext
    capabilities: Capabilities
    service_names: list[str] = field(default_factory=list)
    built_services: set[str] = field(default_factory=set)
    background: list[asyncio.Task[Any]] = field(default_factory=list)

    async def start(self) -> None:
        await self.ctx.revocations.load()
        self.background = [asyncio.create_task(self.ctx.revocations.run())]
        self.background += [asyncio.create_task(job()) for job in self.ctx.background]
        await self.grpc_server.start()
        for name in ["", *self.service_names]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        # What exists now (modules, descriptors, the contract, capabilities) lives as long as
        # the process: keep it out of the collector's full passes, which would otherwise walk
        # ~125k objects and stall every call in flight for tens of ms (a p99 cliff under load).
        # Collect first, so no garbage is frozen with them.
        gc.collect()
        gc.freeze()

    async def stop(self, grace: float | None = None) -> None:
        """Graceful stop: report NOT_SERVING, end streams with UNAVAILABLE, let unary calls finish."""
        grace = self.settings.shutdown_grace.total_seconds() if grace is None else grace
        await self.health.enter_graceful_shutdown()
        self.ctx.stopping.set()
        self.chain.stop_streams()
        await self.grpc_server.stop(grace)
        for hook in self.ctx.on_stop:
            await hook()
        for task in self.background:
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        await self.db.dispose()

    async def wait_for_termination(self) -> None:
        await self.grpc_server.wait_for_termination()


async def create_server(
    settings: Settings, *, clock: Clock | None = None, registry: CollectorRegistry | None = None
) -> tuple[NexusServer, int]:
    """Build (not start) the server on settings.host:settings.port; port 0 picks a free one."""
    registry = registry or CollectorRegistry()
    clock = clock or SystemClock()
    # Page tokens are sealed under a key from the secret key, so replicas accept each other's.
    pagination.configure(settings.secret_key)
    periodic.register(registry)
    db = Database(create_async(settings.database_url), clock)
    ctx = AppContext(settings, db, clock, registry, Revocations(db))
    capabilities = build_capabilities(ctx)
    servicers = capabilities.servicers
    auth = Authentication(ctx)
    # Built after the capabilities, so the caches hear each feed row before the streams do.
    guard = StreamGuard(ctx.revocations, auth, clock)
    chain = Chain([RequestLog(), Metrics(registry), auth, *ctx.layers], contract.access_table(), guard=guard)
    options = [(k, 1 if k == "grpc.so_reuseport" and settings.reuse_port else v) for k, v in _OPTIONS]
    server = grpc.aio.server(interceptors=[chain], options=options)
    service_names = []
    for service in contract.services():
        server.add_generic_rpc_handlers((service_handler(service, servicers.get(service.full_name)),))
        service_names.append(service.full_name)

    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server, pool=contract.load()
    )
    port = server.add_insecure_port(f"{settings.host}:{settings.port}")
    if port == 0:
        raise OSError(f"could not bind {settings.host}:{settings.port}")
    return NexusServer(
        settings,
        server,
        db,
        chain,
        health_servicer,
        registry,
        ctx,
        capabilities,
        service_names,
        set(servicers),
    ), port
