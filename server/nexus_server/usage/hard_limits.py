"""Hard quotas in force: the tenants whose `api_calls` quota is used up, and the layer of the
chain that refuses their programs' calls until the period ends.

A plan whose `api_calls` quota is a hard limit (the free plan) refuses further calls once the
period's total reaches the included quantity: RESOURCE_EXHAUSTED, reason QUOTA_EXCEEDED, a
QuotaFailure with subject `metric:api_calls` and RetryInfo running to the period's end.

Who is refused: calls authenticated by the tenant's API keys, except to UsageService and
BillingService, so that a program can still see why (CheckQuota answers `allowed = false`)
and a plan can still be bought. People's calls (the console, the CLI) are never refused: the
quota meters a tenant's programs, and the admins who must read the usage and upgrade have to
be able to sign in and do it. Refused calls are not metered, so a refused program does not
push `used` further past the quota.

How every replica knows, at a dict lookup per call: the metering flush that crosses the
quota sends a signal through the revocation feed in its own transaction (`QUOTA`, the tenant
id), and a tenant change (`tenant`: a plan changed) is one too; on either, this replica
re-reads that tenant's terms and period total. At start, and every five minutes as a
safety net, it re-reads every tenant that used up a quota in the last year. A block lapses
by itself when its period ends. The meter writes once a second, so a tenant can go past its
quota by about a second's calls before the block holds; the docs say so (`used` may end
slightly above `included`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from nexus_server.auth.principal import PrincipalKind
from nexus_server.auth.revocations import Revocations
from nexus_server.common import periodic
from nexus_server.common.errors import QuotaViolation, ResourceExhausted
from nexus_server.db.uow import Database, UnitOfWork
from nexus_server.interceptors.call import Call
from nexus_server.interceptors.layer import nothing_after
from nexus_server.usage import store
from nexus_server.usage.rules import RESERVED
from nexus_server.usage.terms import Enforcement, TermsSource

log = logging.getLogger("nexus.usage")

QUOTA = "quota"  # revocation-feed signal: subject is a tenant id whose hard limit was reached
TENANT = "tenant"  # tenants/cache.py TENANT: the tenant's plan (or status) changed
# The services a program of an exhausted tenant may still call: to see, and to lift, the limit.
EXEMPT = frozenset({"nexus.usage.v1.UsageService", "nexus.billing.v1.BillingService"})
# How far back a used-up quota may still be in force: the longest billing period (a year).
LOOKBACK = timedelta(days=366)


@dataclass(frozen=True)
class Block:
    until: datetime  # the period's end, when the quota resets
    included: int
    plan_id: str


class HardLimits:
    """The chain layer, and the per-replica set of exhausted tenants behind it."""

    def __init__(self, db: Database, source: TermsSource, revocations: Revocations):
        self.db = db
        self.source = source
        self._now = db.clock.now
        self._blocked: dict[str, Block] = {}
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        revocations.on_revoke(self._signal)

    def before(self, call: Call) -> None:
        # The hot path: almost always one falsy dict test.
        blocked = self._blocked
        if not blocked:
            return
        block = blocked.get(call.tenant_id)
        principal = call.principal
        if (
            block is None
            or principal is None
            or principal.kind is not PrincipalKind.API_KEY
            or not call.tenant_is_callers
            or call.method.service in EXEMPT
        ):
            return
        now = self._now()
        if now >= block.until:
            blocked.pop(call.tenant_id, None)  # the period ended: the quota has reset
            return
        raise ResourceExhausted(
            f"the {block.plan_id} plan's {block.included:,} API calls for this period are used up; "
            f"they reset at {block.until.isoformat()}, or upgrade the plan",
            reason="QUOTA_EXCEEDED",
            retry_after=block.until - now,
            violations=[
                QuotaViolation(
                    f"metric:{RESERVED}",
                    f"{block.included} {RESERVED} per billing period ({block.plan_id} plan, hard limit)",
                )
            ],
            metadata={"metric": RESERVED, "reset_time": block.until.isoformat()},
        )

    after = staticmethod(nothing_after)

    def is_blocked(self, tenant_id: str) -> bool:
        block = self._blocked.get(tenant_id)
        return block is not None and self._now() < block.until

    @staticmethod
    async def signal(uow: UnitOfWork, revocations: Revocations, tenant_id: str) -> None:
        """Tell every replica, in the crossing's transaction, to re-read the tenant."""
        await revocations.revoke(uow, QUOTA, tenant_id, until=uow.clock.now())

    def _signal(self, kind: str, subject: str) -> None:
        if kind in (QUOTA, TENANT):
            self._dirty.add(subject)
            self._wake.set()

    async def refresh(self, tenant_ids: set[str] | list[str]) -> None:
        """Re-read each tenant's terms and period total: block, or lift, accordingly."""
        now = self._now()
        async with self.db.unit_of_work(readonly=True) as uow:
            for tenant_id in tenant_ids:
                terms = await self.source.terms(uow, tenant_id, now)
                quota = terms.quota(RESERVED)
                used = 0
                if quota.enforcement is Enforcement.HARD_LIMIT:
                    used = (await store.period_totals(uow.session, tenant_id, terms.period_start)).get(
                        RESERVED, 0
                    )
                if quota.enforcement is Enforcement.HARD_LIMIT and used >= quota.included:
                    self._blocked[tenant_id] = Block(terms.period_end, quota.included, terms.plan_id)
                else:
                    self._blocked.pop(tenant_id, None)

    async def reload(self) -> None:
        """Re-read every tenant that used up a quota lately, and every one blocked here."""
        async with self.db.unit_of_work(readonly=True) as uow:
            recent = await store.exceeded_since(uow.session, RESERVED, self._now() - LOOKBACK)
        await self.refresh({*recent, *self._blocked})

    async def step(self) -> None:
        dirty, self._dirty = self._dirty, set()
        try:
            await self.refresh(dirty)
        except BaseException:
            self._dirty |= dirty  # read them again next time
            raise

    async def run(self) -> None:
        """Load at start, then follow the signals (wiring also runs `reload` periodically)."""
        await self.reload()
        # Woken by signals; the interval only bounds how long a lost wake-up could wait.
        await periodic.every("usage.hard_limits", 5.0, self.step, wake=self._wake, logger=log)
