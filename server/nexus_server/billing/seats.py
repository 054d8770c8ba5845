"""Seats follow the member count on per-seat plans: a member added past the seats paid for
raises the quantity, with no proration (the seeds bill whole months; the next invoice
charges the new count). Seats are never lowered on their own: a member leaving does not
refund the month, and an admin lowers seats with ChangePlan.

The tenants capability already tells every replica when a membership changes (the
`membership` feed row, sent in the changing transaction); `SeatSync` hears it and checks
that tenant. Every replica hears it, so each checks: under the account lock the first one
raises the seats and the others find nothing to do; the Stripe update carries the
idempotency key `seats:<subscription>:<count>`, so Stripe changes the quantity once.
"""

from __future__ import annotations

import asyncio
import logging

from nexus_server.auth.revocations import Revocations
from nexus_server.billing import rules, selling, subscriptions
from nexus_server.billing.ports import Deps
from nexus_server.billing.provider import ProviderError
from nexus_server.db.uow import Database

MEMBERSHIP = "membership"  # tenants/cache.py MEMBERSHIP: subject "<tenant_id>/<user_id>"
log = logging.getLogger("nexus.billing")


class SeatSync:
    def __init__(self, db: Database, deps: Deps, revocations: Revocations):
        self.db = db
        self.deps = deps
        self._pending: set[str] = set()
        self._wake = asyncio.Event()
        self._per_seat = {p.id for p in deps.catalog.plans if p.per_seat}
        revocations.on_revoke(self._heard)

    def _heard(self, kind: str, subject: str) -> None:
        if kind == MEMBERSHIP and self._per_seat:
            self._pending.add(subject.split("/", 1)[0])
            self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, set()
            for tenant_id in sorted(batch):
                try:
                    await self.sync(tenant_id)
                except ProviderError:
                    log.warning("seat sync for %s: payment provider unavailable; retrying", tenant_id)
                    self._pending.add(tenant_id)
                except Exception:
                    log.warning("seat sync for %s failed", tenant_id, exc_info=True)
            if self._pending:
                await asyncio.sleep(5.0)
                self._wake.set()

    async def sync(self, tenant_id: str) -> bool:
        """Raise the tenant's seats to its member count; whether anything changed."""
        deps = self.deps
        async with self.db.unit_of_work() as uow:
            await subscriptions.account(uow, deps, tenant_id, lock=True)
            row = await subscriptions.current(uow, deps, tenant_id)
            plan = deps.catalog.plan(row.plan_id)
            if plan is None or not plan.per_seat or row.status not in rules.IN_FORCE:
                return False
            if row.provider_subscription_id and deps.provider is None:
                return False  # a Stripe subscription, on a replica configured without Stripe
            members = await deps.tenants.member_count(uow, tenant_id)
            if members <= row.seats:
                return False
            if deps.provider is None or not row.provider_subscription_id:
                state = subscriptions.with_(subscriptions.state_of(row), seats=members)
            else:
                mirrored = await deps.provider.update_items(
                    row.provider_subscription_id,
                    await selling.subscription_items(uow, deps, tenant_id, plan, members),
                    prorate=False,
                    idempotency_key=f"seats:{row.id}:{members}",
                )
                state = selling.state_from_provider(deps, mirrored, row)
            _, changed = await subscriptions.apply(uow, deps, row, state)
            return changed
