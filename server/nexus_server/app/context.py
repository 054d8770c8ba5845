"""What every capability is built from: settings, the database, the clock, the metrics
registry and the revocation feed, plus the three ports the authentication layer reads at call
time (token verifier, key verifier, tenant directory), the layers capabilities add to the
chain, and their background tasks and stop hooks. Capabilities hand each other nothing
through it: `app/wiring.py` passes those ports as typed arguments.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from nexus_server.auth.ports import KeyVerifier, TenantDirectory, TokenVerifier
from nexus_server.auth.revocations import Revocations
from nexus_server.common.clock import Clock
from nexus_server.config import Settings
from nexus_server.db.uow import Database


@dataclass
class AppContext:
    settings: Settings
    db: Database
    clock: Clock
    registry: CollectorRegistry
    revocations: Revocations
    tokens: TokenVerifier | None = None
    keys: KeyVerifier | None = None
    tenants: TenantDirectory | None = None
    # Layers a capability adds to the chain after authentication (rate limit, metering).
    layers: list[Any] = field(default_factory=list)
    # Coroutines to run for the server's life (pollers, senders); cancelled at stop.
    background: list[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)
    # Set when a graceful stop begins, so that long calls (StreamUsage) end at a clean point
    # with what they have committed, before grpc's grace runs out and cancels them.
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    # Hooks run at graceful stop, before the database closes (flush buffers).
    on_stop: list[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)
