"""Builds the apikeys capability: the key verifier (the authentication layer's port), the
last-used flusher, the expiry sweep, the rate-limit layer, and the ApiKeyService servicer."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from nexus_server.apikeys import workflows
from nexus_server.apikeys.last_used import LastUsed
from nexus_server.apikeys.service import ApiKeyServicer
from nexus_server.apikeys.verifier import KeyVerifier
from nexus_server.app.context import AppContext
from nexus_server.ratelimit.layer import RateLimitLayer
from nexus_server.ratelimit.limiter import Limiter
from nexus_server.ratelimit.limits import Backend
from nexus_server.ratelimit.memory import MemoryBackend
from nexus_server.ratelimit.policies import PlanLimit, Policies
from nexus_server.ratelimit.redis_backend import RedisBackend

log = logging.getLogger("nexus.apikeys")
EXPIRY_SWEEP_SECONDS = 5.0


def build(ctx: AppContext) -> object | None:
    last_used = LastUsed(ctx.db)
    verifier = KeyVerifier(ctx.db, ctx.revocations, last_used)
    ctx.keys = verifier
    ctx.extras["apikeys.verifier"] = verifier
    ctx.background.append(last_used.run)
    ctx.on_stop.append(last_used.stop)
    ctx.background.append(lambda: _sweep_expired(ctx))

    limiter = _limiter(ctx)
    ctx.extras["ratelimit.limiter"] = limiter
    policies = Policies(
        ctx.db,
        ctx.revocations,
        key_limit=verifier.rate_limit_of,
        cached_key_limit=verifier.cached_rate_limit,
        user_per_minute=ctx.settings.ratelimit_user_per_minute,
        # Billing (built later) may register `plan id -> calls per minute` under this name.
        plan_limit=lambda: _plan_limit(ctx),
    )
    ctx.layers.append(RateLimitLayer(limiter, policies))
    return ApiKeyServicer(ctx, verifier, limiter)


def _limiter(ctx: AppContext) -> Limiter:
    backend: Backend
    if ctx.settings.redis_url:
        redis_backend = RedisBackend(ctx.settings.redis_url)
        ctx.on_stop.append(redis_backend.close)
        backend = redis_backend
    else:
        backend = MemoryBackend()
    return Limiter(backend, on_down=ctx.settings.ratelimit_on_redis_down)


def _plan_limit(ctx: AppContext) -> PlanLimit | None:
    registered: Any = ctx.extras.get("billing.plan_rate_limit")
    return registered if callable(registered) else None


async def _sweep_expired(ctx: AppContext) -> None:
    while True:
        await asyncio.sleep(EXPIRY_SWEEP_SECONDS)
        try:
            async with ctx.db.unit_of_work() as uow:
                await workflows.publish_expired(uow)
        except Exception:
            log.warning("publishing expired keys failed; retrying", exc_info=True)
