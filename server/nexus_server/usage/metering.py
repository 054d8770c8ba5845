"""Metering: every authenticated Nexus call becomes an `api_calls` record of its tenant and a
count in the hourly endpoint statistics, written off the request path.

The chain's `after` only appends one tuple to a buffer; a background task (`run`) flushes
the buffer every `interval`, or at once when `max_batch` calls are waiting, in one unit of
work per flush: the records go through ingest (idempotent, rolled up, quota events) like any
other usage, and the hourly counts are added in the same transaction, so the two never
disagree. The server's graceful stop flushes what is left. When a flush takes a hard-limited
quota over its included amount, `on_exhausted` is called inside the same unit of work, so
the replicas learn of the block (see hard_limits.py) only if the records committed; calls
that were refused with QUOTA_EXCEEDED are not metered, so a refusal costs nothing.

What this trades away, on purpose:
- A crash loses the calls of the last interval (at most about a second's worth by default):
  metering must never slow down or fail the call it meters.
- While the database is unreachable, failed batches are kept and retried, up to
  `max_pending` calls; past that the oldest are dropped and counted in a warning, so an
  outage cannot exhaust memory.
- A flush that fails after its commit reached the database (the acknowledgement is lost)
  is retried as new calls and counted twice; each attempt gets fresh idempotency keys,
  since keys made on the hot path would cost every call work it does not need.
- A stream's latency is the stream's whole life (capped at the last latency bucket, about
  an hour), not the time to its first message: the chain does not note when a stream's
  first message went out.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from nexus_server.auth.principal import PrincipalKind
from nexus_server.common import periodic
from nexus_server.common.pacing import Pacer
from nexus_server.db.uow import Database, UnitOfWork
from nexus_server.interceptors.call import Call
from nexus_server.usage import endpoint_store, ingest
from nexus_server.usage.latency import bucket_of
from nexus_server.usage.rules import RESERVED, Record
from nexus_server.usage.terms import TermsSource

log = logging.getLogger("nexus.usage")

# (tenant_id, is_api_key, subject, method, code, seconds, wall time): one metered call.
Entry = tuple[str, bool, str, str, str, float, datetime]

MAX_PENDING = 100_000
# Metered calls' idempotency keys: this process's random id and a counter, unique across
# replicas and restarts, and a few times cheaper than a uuid4 per call.
_RUN = uuid.uuid4().hex
_SERIAL = itertools.count()
# Called in a flush's unit of work when its records used up a tenant's hard limit.
Exhausted = Callable[[UnitOfWork, str], Awaitable[None]]


class Meter:
    """The metering layer of the chain, and the flusher behind it."""

    def __init__(
        self,
        db: Database,
        source: TermsSource,
        *,
        interval: float = 1.0,
        max_batch: int = 1000,
        max_flush: int = 10_000,
        max_pending: int = MAX_PENDING,
        on_exhausted: Exhausted | None = None,
    ):
        self.db = db
        self.source = source
        self.interval = interval
        self.max_batch = max_batch
        # Calls written per unit of work: a backlog left by an outage goes in several short
        # transactions, not one that holds SQLite's single writer for seconds.
        self.max_flush = max(max_flush, 1)
        self.max_pending = max(max_pending, 1)
        self.on_exhausted = on_exhausted
        self._now = db.clock.now
        self._buffer: deque[Entry] = deque(maxlen=self.max_pending)
        self._dropped = 0
        self._wake = asyncio.Event()

    @staticmethod
    def before(call: Call) -> None:
        """Nothing to check before the call: metering only counts outcomes."""

    def after(self, call: Call) -> None:
        # The hot path: once per call, after everything else. No awaits; one tuple.
        principal = call.principal
        if principal is None or not call.tenant_is_callers or not call.tenant_id or not call.method.is_nexus:
            return  # anonymous, not the caller's own tenant (not charged), health, reflection
        if call.error_reason == "QUOTA_EXCEEDED":
            return  # refused for the quota itself: counting it would push `used` on without end
        buffer = self._buffer
        if len(buffer) == self.max_pending:
            self._dropped += 1  # the deque drops the oldest to make room
        buffer.append(
            (
                call.tenant_id,
                principal.kind is PrincipalKind.API_KEY,
                principal.subject,
                call.method.full_name,
                call.code.name,
                call.elapsed(),
                self._now(),
            )
        )
        # On reaching the mark, not past it: a backlog put back by a failed flush stays past
        # it, and waking on every call would retry a dead database in a tight loop.
        if len(buffer) == self.max_batch:
            self._wake.set()

    @property
    def pending(self) -> int:
        """Calls noted and not yet written."""
        return len(self._buffer)

    async def flush(self) -> int:
        """Write up to `max_flush` noted calls in one unit of work; return how many. On
        failure the batch goes back, ahead of newer calls, and the error propagates (the
        periodic loop logs it and retries next interval)."""
        self._warn_dropped()
        buffer = self._buffer
        if not buffer:
            return 0
        if len(buffer) <= self.max_flush:
            batch = list(buffer)
            self._buffer = deque(maxlen=self.max_pending)
        else:
            batch = [buffer.popleft() for _ in range(self.max_flush)]
        try:
            # Built before the transaction, a slice at a time: the thousand rows of a busy
            # second are milliseconds of work that must not hold the loop in one stretch.
            pacer = Pacer()
            records = await _records(batch, pacer)
            hourly = await _hourly(batch, pacer)
            async with self.db.unit_of_work() as uow:
                outcomes = await ingest.record_tenants(uow, self.source, records)
                for tenant_id, outcome in outcomes.items():
                    if outcome.exhausted and self.on_exhausted is not None:
                        await self.on_exhausted(uow, tenant_id)
                await endpoint_store.add_hourly(uow.session, hourly, pacer)
        except BaseException:
            self._put_back(batch)
            raise
        if len(self._buffer) >= self.max_batch:
            # A backlog: go on without waiting out the interval. Only then: under load calls
            # arrive during every flush, and flushing again at once for them made flushes
            # back to back, each a few records, their fixed cost paid a hundred times a second.
            self._wake.set()
        return len(batch)

    async def stop(self) -> None:
        """At graceful stop: write everything left. It never raises (a stop hook that raised
        would keep the server's other hooks from running); what cannot be written is lost,
        and said so."""
        try:
            while self._buffer:
                await self.flush()
        except Exception:
            log.error("metering: %d calls could not be written at stop", len(self._buffer), exc_info=True)
        self._warn_dropped()

    async def run(self) -> None:
        await periodic.every("usage.metering", self.interval, self.flush, wake=self._wake, logger=log)

    def _put_back(self, batch: list[Entry]) -> None:
        newer = self._buffer
        restored: deque[Entry] = deque(batch, maxlen=self.max_pending)
        restored.extend(newer)  # past the bound the oldest go first
        self._dropped += max(len(batch) + len(newer) - self.max_pending, 0)
        self._buffer = restored

    def _warn_dropped(self) -> None:
        if self._dropped:
            log.warning(
                "metering: dropped %d calls (more than %d waiting to be written)",
                self._dropped,
                self.max_pending,
            )
            self._dropped = 0


async def _records(batch: list[Entry], pacer: Pacer) -> dict[str, list[ingest.Item]]:
    """Each tenant's calls as `api_calls` records, tenants in order (a lock order)."""
    per_tenant: dict[str, list[ingest.Item]] = {}
    async for part in pacer.slices(batch):
        for tenant_id, is_key, subject, method, code, seconds, when in part:
            items = per_tenant.setdefault(tenant_id, [])
            properties: dict[str, Any] = {
                "method": method,
                "code": code,
                "latency_ms": round(seconds * 1000, 3),
                ("api_key_id" if is_key else "user_id"): subject,
            }
            record = Record(RESERVED, 1, f"nexus:{_RUN}:{next(_SERIAL)}", when, properties)
            items.append(ingest.Item(len(items), record))
    return dict(sorted(per_tenant.items()))


async def _hourly(batch: list[Entry], pacer: Pacer) -> dict[endpoint_store.HourlyKey, int]:
    counts: dict[endpoint_store.HourlyKey, int] = {}
    async for part in pacer.slices(batch):
        for tenant_id, is_key, subject, method, code, seconds, when in part:
            hour = when.replace(minute=0, second=0, microsecond=0)
            key = (tenant_id, hour, method, subject if is_key else "", code, bucket_of(seconds))
            counts[key] = counts.get(key, 0) + 1
    return counts
