"""The sweep that gives back credit holds nobody settled: a reservation past its expiry is
released (a RELEASE entry by `system`), each in its own transaction under the tenant's
balance lock, so a commit racing the sweep either wins or finds the hold gone."""

from __future__ import annotations

import logging

from nexus_server.billing import ledger
from nexus_server.billing import ledger_store as store
from nexus_server.billing.catalog import Catalog
from nexus_server.db.uow import Database

HOLD_SWEEP_SECONDS = 5.0
BATCH = 200
log = logging.getLogger("nexus.billing")


class HoldSweep:
    def __init__(self, db: Database, catalog: Catalog):
        self.db = db
        self.catalog = catalog

    async def step(self) -> int:
        """Release what has expired (a batch at a time); how many holds were released."""
        async with self.db.unit_of_work(readonly=True) as uow:
            due = await store.expired_holds(uow.session, uow.clock.now(), BATCH)
        released = 0
        for tenant_id, reservation_id in due:
            async with self.db.unit_of_work() as uow:
                released += await ledger.expire_one(uow, self.catalog, tenant_id, reservation_id)
        if released:
            log.info("released %d expired credit holds", released)
        return released
