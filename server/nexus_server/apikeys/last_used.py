"""`last_used_time`, written in batches: the auth path only notes the time in memory.

A background task flushes the noted times every `interval` in one statement; the server's
graceful stop flushes what is left. A lost batch (crash) only makes `last_used_time` lag,
which the contract allows.
"""

from __future__ import annotations

import logging
from datetime import datetime

from nexus_server.apikeys import store
from nexus_server.common import periodic
from nexus_server.common.pacing import Pacer
from nexus_server.db.uow import Database

log = logging.getLogger("nexus.apikeys")


class LastUsed:
    def __init__(self, db: Database, *, interval: float = 15.0):
        self.db = db
        self.interval = interval
        self._pending: dict[str, datetime] = {}

    def note(self, key_id: str, when: datetime) -> None:
        self._pending[key_id] = when

    async def flush(self) -> int:
        if not self._pending:
            return 0
        batch, self._pending = self._pending, {}
        pacer = Pacer()
        try:
            uses = sorted(batch.items())
            await pacer.breathe()
            async with self.db.unit_of_work() as uow:
                await store.write_last_used(uow.session, uses, pacer)
        except Exception:
            # Put the batch back (newer notes win) and try again next round.
            for key_id, when in batch.items():
                if key_id not in self._pending or self._pending[key_id] < when:
                    self._pending[key_id] = when
            raise
        return len(batch)

    async def stop(self) -> None:
        """At graceful stop: write what is left."""
        await self.flush()

    async def run(self) -> None:
        await periodic.every("apikeys.last_used", self.interval, self.flush, logger=log)
