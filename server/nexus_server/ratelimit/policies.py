"""Which limits apply to a call: the API key's own, the person's, and the tenant's.

- key: the key's `rate_limit_per_minute`;
- user: `user_per_minute` (setting), or a `user` override;
- tenant: a `tenant` override, else the tenant's plan limit (a `plan` override, else what
  billing registers in `plan_limit`, else PLAN_DEFAULTS).
Overrides and tenants' plans are cached (no database read per call) and reloaded when the
revocation feed says they changed, with a TTL as backstop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from nexus_server.auth.principal import Principal
from nexus_server.auth.revocations import Revocations
from nexus_server.common.memo import Memo
from nexus_server.db.uow import Database, UnitOfWork
from nexus_server.ratelimit import store
from nexus_server.ratelimit.limits import Limit
from nexus_server.ratelimit.overrides import FEED_KIND

# Tenant-wide calls per minute by plan, unless billing or an override says otherwise. The
# tenant limit is a ceiling over all of a tenant's keys and people (each key has its own,
# 100/min by default), sized so bulk work such as publishing events is not starved.
PLAN_DEFAULTS = {"free": 12_000, "pro": 60_000, "business": 300_000, "enterprise": 1_200_000}
UNKNOWN_PLAN = 12_000
_NEVER = float("-inf")
MAX_PLANS = 50_000  # tenants whose plan is remembered; past it the memo starts again
TENANT_FEED = "tenant"  # tenants' feed kind: status, plan or domain changed

KeyLimit = Callable[[str], Awaitable[int]]
CachedKeyLimit = Callable[[str], int | None]
PlanLimit = Callable[[str], int | None]


# (uow, tenant_id) -> the tenant's plan id, "" if no such tenant: the tenants capability's port.
PlanOf = Callable[[UnitOfWork, str], Awaitable[str]]


class Policies:
    def __init__(
        self,
        db: Database,
        revocations: Revocations,
        *,
        key_limit: KeyLimit,
        user_per_minute: int,
        cached_key_limit: CachedKeyLimit = lambda key_id: None,
        plan_of: PlanOf,
        plan_limit: Callable[[], PlanLimit | None] = lambda: None,
        ttl: float = 30.0,
    ):
        self.db = db
        self.key_limit = key_limit
        self.cached_key_limit = cached_key_limit
        self.user_per_minute = user_per_minute
        self.plan_limit = plan_limit
        self.plan_of = plan_of
        self.ttl = ttl
        self._overrides: dict[tuple[str, str], int] = {}
        self._overrides_at = _NEVER
        self._epoch = 0  # bumped by each invalidation: a read racing one is not trusted
        self._plans: Memo[str, tuple[float, str]] = Memo(MAX_PLANS)
        self._plan_epoch = 0  # bumped by each tenant change, as _epoch is for overrides
        self._lock = asyncio.Lock()
        revocations.on_revoke(self._invalidate)

    def _invalidate(self, kind: str, subject: str) -> None:
        if kind == FEED_KIND:
            self._epoch += 1
            self._overrides_at = _NEVER
        elif kind == TENANT_FEED:
            self._plan_epoch += 1
            self._plans.pop(subject, None)

    async def _fresh_overrides(self) -> dict[tuple[str, str], int]:
        if time.monotonic() - self._overrides_at < self.ttl:
            return self._overrides
        async with self._lock:
            if time.monotonic() - self._overrides_at >= self.ttl:
                started, epoch = time.monotonic(), self._epoch
                async with self.db.unit_of_work(readonly=True) as uow:
                    self._overrides = await store.all_overrides(uow.session)
                self._overrides_at = started if epoch == self._epoch else _NEVER
        return self._overrides

    async def _plan_of(self, tenant_id: str) -> str:
        cached = self._plans.get(tenant_id)
        if cached is not None and time.monotonic() - cached[0] < self.ttl:
            return cached[1]
        started, epoch = time.monotonic(), self._plan_epoch
        async with self.db.unit_of_work(readonly=True) as uow:
            plan = await self.plan_of(uow, tenant_id)
        # A plan change announced while we read may not be in what we read: use it for this
        # call, but do not remember it past the change.
        if epoch == self._plan_epoch:
            self._plans.put(tenant_id, (started, plan))
        return plan

    async def tenant_limit(self, tenant_id: str) -> int:
        overrides = await self._fresh_overrides()
        if ("tenant", tenant_id) in overrides:
            return overrides[("tenant", tenant_id)]
        return self._plan_limit(overrides, await self._plan_of(tenant_id))

    def _plan_limit(self, overrides: dict[tuple[str, str], int], plan: str) -> int:
        if ("plan", plan) in overrides:
            return overrides[("plan", plan)]
        registered = self.plan_limit()
        from_billing = registered(plan) if registered is not None else None
        return from_billing or PLAN_DEFAULTS.get(plan, UNKNOWN_PLAN)

    async def limits_for(self, principal: Principal, tenant_id: str) -> list[Limit]:
        cached = self.cached_limits(principal, tenant_id)
        if cached is not None:
            return cached
        limits = []
        if principal.key_id:
            limits.append(
                Limit("apikey", f"apikey:{principal.key_id}", await self.key_limit(principal.key_id))
            )
        elif principal.user_id:
            overrides = await self._fresh_overrides()
            per_minute = overrides.get(("user", principal.user_id), self.user_per_minute)
            limits.append(Limit("user", f"user:{principal.user_id}", per_minute))
        if tenant_id:
            limits.append(Limit("tenant", f"tenant:{tenant_id}", await self.tenant_limit(tenant_id)))
        return limits

    def cached_limits(self, principal: Principal, tenant_id: str) -> list[Limit] | None:
        """The same limits as `limits_for` from what is cached, without awaiting (the path of
        nearly every call); None when something must be read first."""
        now = time.monotonic()
        if now - self._overrides_at >= self.ttl:
            return None
        overrides = self._overrides
        limits = []
        subject = principal.subject
        if subject and not principal.is_user:
            per_minute = self.cached_key_limit(subject)
            if per_minute is None:
                return None
            limits.append(Limit("apikey", "apikey:" + subject, per_minute))
        elif subject:
            per_minute = overrides.get(("user", subject), self.user_per_minute)
            limits.append(Limit("user", "user:" + subject, per_minute))
        if tenant_id:
            tenant = overrides.get(("tenant", tenant_id))
            if tenant is None:
                plan = self._plans.get(tenant_id)
                if plan is None or now - plan[0] >= self.ttl:
                    return None
                tenant = self._plan_limit(overrides, plan[1])
            limits.append(Limit("tenant", "tenant:" + tenant_id, tenant))
        return limits
