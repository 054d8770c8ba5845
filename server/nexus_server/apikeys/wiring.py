"""Builds the apikeys capability: the key verifier (the authentication layer's port), the
last-used flusher, the expiry sweep, the rate-limit layer, and the ApiKeyServicer."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from nexus_server.apikeys import workflows
from nexus_server.apikeys.last_used import LastUsed
from nexus_server.apikeys.service import ApiKeyServicer
from nexus_server.apikeys.verifier import KeyVerifier
from nexus_server.app.context import AppContext
from nexus_server.common import periodic
from nexus_server.ratelimit.layer import RateLimitLayer
from nexus_server.ratelimit.limiter import Limiter
from nexus_server.ratelimit.limits import Backend
from nexus_server.ratelimit.memory import MemoryBackend
from nexus_server.ratelimit.policies import PlanLimit, PlanOf, Policies
from nexus_server.ratelimit.redis_backend import RedisBackend

log = logging.getLogger("nexus.apikeys")
EXPIRY_SWEEP_SECONDS = 5.0


# The port tenants use to revoke a deleted tenant's keys in the deleting transaction.
revoke_tenant_keys = workflows.revoke_tenant_keys


@dataclass(frozen=True)
class Built:
    servicer: ApiKeyServicer
    verifier: KeyVerifier  # also the authentication layer's port (ctx.keys)
    limiter: Limiter


def build(
    ctx: AppContext, *, plan_of: PlanOf, plan_limit: Callable[[], PlanLimit | None] = lambda: None
) -> Built:
    """`plan_of`: tenants' port (a tenant's plan id); `plan_limit`: billing's port (plan id ->
    calls per minute), once billing is built."""
    last_used = LastUsed(ctx.db)
    verifier = KeyVerifier(ctx.db, ctx.revocations, last_used)
    ctx.keys = verifier
    ctx.background.append(last_used.run)
    ctx.on_stop.append(last_used.stop)
    ctx.background.append(lambda: _sweep_expired(ctx))

    limiter = _limiter(ctx)
    policies = Policies(
        ctx.db,
        ctx.revocations,
        key_limit=verifier.rate_limit_of,
        cached_key_limit=verifier.cached_rate_limit,
        user_per_minute=ctx.settings.ratelimit_user_per_minute,
        plan_of=plan_of,
        plan_limit=plan_limit,
    )
    ctx.layers.append(RateLimitLayer(limiter, policies))
    return Built(ApiKeyServicer(ctx, verifier, limiter), verifier, limiter)


def _limiter(ctx: AppContext) -> Limiter:
    backend: Backend
    if ctx.settings.redis_url:
        redis_backend = RedisBackend(ctx.settings.redis_url)
        ctx.on_stop.append(redis_backend.close)
        backend = redis_backend
    else:
        backend = MemoryBackend()
    return Limiter(backend, on_down=ctx.settings.ratelimit_on_redis_down)


async def _sweep_expired(ctx: AppContext) -> None:
    async def sweep() -> None:
        async with ctx.db.unit_of_work() as uow:
            await workflows.publish_expired(uow)

    await periodic.every("apikeys.expiry_sweep", EXPIRY_SWEEP_SECONDS, sweep, logger=log)
