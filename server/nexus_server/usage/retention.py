"""Raw records are kept for the retention period, then deleted; rollups stay for good, but
for the hourly endpoint statistics, which GetEndpointStats reads back 90 days at most.

Each step deletes a bounded slice of the oldest records in its own short transaction, and
loops while slices come back full. Several replicas may sweep at once: they delete the same
rows at worst, and a delete of a row already gone deletes nothing.
"""

from __future__ import annotations

from datetime import timedelta

from nexus_server.db.uow import Database
from nexus_server.usage import endpoint_store, store
from nexus_server.usage.endpoints import MAX_AGE

SLICE = 5000


class Sweep:
    def __init__(self, db: Database, keep: timedelta):
        self.db = db
        self.keep = keep

    async def step(self) -> int:
        removed = 0
        while True:
            async with self.db.unit_of_work() as uow:
                count = await store.prune_records(uow.session, uow.clock.now() - self.keep, SLICE)
            removed += count
            if count < SLICE:
                break
        async with self.db.unit_of_work() as uow:
            # A day past the oldest hour a window may start at, so no reply loses an hour.
            await endpoint_store.prune_hours(uow.session, uow.clock.now() - MAX_AGE - timedelta(days=1))
        return removed
