"""The webhook sender: fan-out, then leased, ordered attempts per endpoint.

Each step (common/periodic.py; woken at once by this process's commits of events, and
polling for other replicas') fans out what was published, then leases endpoints that have
due deliveries and are neither held nor leased by a live replica. Each leased endpoint gets
a task of its own, so a slow endpoint takes one slot and never delays another endpoint or
another tenant; at most `concurrency` endpoints are sent to at once.

An endpoint's task sends its due deliveries one at a time in sequence order and writes the
attempts back in small groups (at most `FLUSH_EVERY` attempts or `FLUSH_SECONDS`), each
write renewing the lease. A write that finds the lease gone (the endpoint was deleted, or
this replica stalled past the lease and another took over) is rolled back and the task
stops: the other replica re-sends what was not recorded. Hence at least once, and once
in the normal case, per endpoint, across replicas. A replica killed mid-attempt leaves the
lease to run out; the next replica to claim the endpoint resends the unrecorded attempts.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from google.protobuf import json_format

from nexus_server.common import ids, outbound
from nexus_server.common.clock import Clock
from nexus_server.common.sealing import Sealer
from nexus_server.db.uow import Database, StoredEvent, UnitOfWork
from nexus_server.events import convert
from nexus_server.events import store as log
from nexus_server.events.webhooks import fanout, rules, signing, store
from nexus_server.events.webhooks.rules import DisabledReason, Outcome, Status, Verdict
from nexus_server.events.webhooks.sender import Sender, Target
from nexus_server.events.webhooks.store import DeliveryRow, EndpointRow

logger = logging.getLogger("nexus.webhooks")

BATCH = 100
FLUSH_EVERY = 50
FLUSH_SECONDS = 2.0
BODY_CACHE = 10_000
SWEEP_BATCH = 5_000

Mail = Callable[[UnitOfWork, str, str, str], Awaitable[None]]
Admins = Callable[[UnitOfWork, str], Awaitable[list[str]]]


class LeaseLost(Exception):
    """This replica no longer holds the endpoint (deleted, or taken over)."""


@dataclass
class Tried:
    delivery: DeliveryRow
    outcome: Outcome
    at: datetime


@dataclass
class Deliverer:
    db: Database
    clock: Clock
    sealer: Sealer
    sender: Sender
    lease: timedelta
    concurrency: int
    mail: Mail | None = None
    admins: Admins | None = None
    owner: str = field(default_factory=lambda: "rep_" + ids.random_base62(16))
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    running: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    closed: bool = False
    _bodies: OrderedDict[str, bytes] = field(default_factory=OrderedDict)

    def __post_init__(self) -> None:
        # Each write renews the lease, so writes must come often enough that the time since
        # the last one plus one whole attempt stays inside the lease.
        spare = self.lease.total_seconds() - self.sender.timeout
        self.flush_seconds = min(FLUSH_SECONDS, max(0.05, spare / 2))

    def on_commit(self, batch: list[StoredEvent]) -> None:
        """The unit of work's listener: events were committed here; fan them out now."""
        if batch:
            self.wake.set()

    async def step(self) -> None:
        # Most replicas of most deployments have no enabled endpoint: then a step is one read,
        # not two write transactions a second (on SQLite each took the one write lock).
        async with self.db.unit_of_work(readonly=True) as uow:
            if not await store.any_enabled(uow.session):
                return
        await self.fan_out()
        await self.claim()

    async def fan_out(self) -> int:
        made = 0
        for _ in range(100):  # bounded: a step yields to the sender even under a flood
            async with self.db.unit_of_work() as uow:
                count = await fanout.step(uow)
            made += count
            if not count:
                break
        return made

    async def claim(self) -> int:
        free = self.concurrency - len(self.running)
        if free <= 0 or self.closed:
            return 0
        now = self.clock.now()
        async with self.db.unit_of_work() as uow:
            rows = await store.claim_endpoints(
                uow.session, self.owner, now, now + self.lease, free, skip=self.running.keys()
            )
        for row in rows:
            task = asyncio.create_task(self._serve(row), name=f"webhook {row.id}")
            self.running[row.id] = task
            task.add_done_callback(functools.partial(self._done, row.id))
        return len(rows)

    async def drain(self) -> None:
        """Wait for every endpoint task running now (tests; shutdown)."""
        while self.running:
            await asyncio.gather(*list(self.running.values()), return_exceptions=True)

    async def run_until_idle(self, rounds: int = 50) -> None:
        """Fan out, claim and send until nothing is due now (tests drive the clock so)."""
        for _ in range(rounds):
            await self.fan_out()
            claimed = await self.claim()
            await self.drain()
            if not claimed:
                return

    async def close(self) -> None:
        self.closed = True  # the step loop may run once more before it is cancelled
        for task in list(self.running.values()):
            task.cancel()
        await asyncio.gather(*list(self.running.values()), return_exceptions=True)
        await self.sender.close()

    def _done(self, endpoint_id: str, _: asyncio.Task[None]) -> None:
        self.running.pop(endpoint_id, None)
        self.wake.set()  # a slot is free, and the endpoint may have more to send

    # --- one endpoint -------------------------------------------------------------------

    async def _serve(self, endpoint: EndpointRow) -> None:
        try:
            await self._send_all(endpoint)
        except LeaseLost:
            logger.info(
                "webhook endpoint lease lost; another replica continues", extra={"endpoint": endpoint.id}
            )
        except Exception:
            logger.warning("webhook sending failed; the lease runs out and it is retried", exc_info=True)

    async def _send_all(self, endpoint: EndpointRow) -> None:
        secrets = self._secrets(endpoint)
        target: Target | None = None
        refused = ""
        try:
            target = await self.sender.target(endpoint.url)
        except outbound.UrlNotAllowed as why:
            refused = f"the address was refused: {why}"
        while True:
            async with self.db.unit_of_work(readonly=True) as uow:
                due = await store.due_deliveries(uow.session, endpoint.id, self.clock.now(), BATCH)
                bodies = await self._render(uow, endpoint.tenant_id, due)
            if not due:
                await self._flush(endpoint, [], release=True)
                return
            tried: list[Tried] = []
            flushed = time.monotonic()
            stop = False
            for delivery in due:
                now = self.clock.now()
                body = bodies.get(delivery.event_sequence)
                if target is None or body is None:
                    outcome = Outcome(0, timedelta(0), error=refused or "the event is no longer in the log")
                else:
                    # The receiver checks the timestamp against its own wall clock.
                    headers = signing.sign(delivery.event_id, int(time.time()), body, secrets)
                    outcome = await self.sender.post(endpoint.id, target, headers, body, now)
                tried.append(Tried(delivery, outcome, now))
                if rules.verdict(outcome) in (Verdict.UNREACHABLE, Verdict.GONE):
                    stop = True
                    break
                if len(tried) >= FLUSH_EVERY or time.monotonic() - flushed >= self.flush_seconds:
                    endpoint = await self._flush(endpoint, tried, release=False)
                    tried, flushed = [], time.monotonic()
                    if not endpoint.enabled:
                        return
            endpoint = await self._flush(endpoint, tried, release=stop)
            if stop or not endpoint.enabled:
                return

    def _secrets(self, endpoint: EndpointRow) -> list[str]:
        found = [self.sealer.open(endpoint.secret).decode()]
        expires = endpoint.previous_secret_expire_time
        if endpoint.previous_secret and expires and expires > self.clock.now():
            found.append(self.sealer.open(endpoint.previous_secret).decode())
        return found

    async def _render(self, uow: UnitOfWork, tenant_id: str, due: list[DeliveryRow]) -> dict[int, bytes]:
        """Each due event's body, the event as JSON, rendered once for all its endpoints."""
        bodies: dict[int, bytes] = {}
        missing = []
        for delivery in due:
            cached = self._bodies.get(delivery.event_id)
            if cached is None:
                missing.append(delivery.event_sequence)
            else:
                bodies[delivery.event_sequence] = cached
        if missing:
            for sequence, stored in (await log.by_sequences(uow.session, tenant_id, missing)).items():
                body = _body(stored)
                bodies[sequence] = body
                self._bodies[stored.id] = body
                if len(self._bodies) > BODY_CACHE:
                    self._bodies.popitem(last=False)
        return bodies

    async def _flush(self, endpoint: EndpointRow, tried: list[Tried], *, release: bool) -> EndpointRow:
        """Record `tried` and the endpoint's new state, renewing (or releasing) the lease;
        the endpoint as it now stands. LeaseLost (and nothing written) if the lease is gone."""
        async with self.db.unit_of_work() as uow:
            now = self.clock.now()
            state, disabled, writes = _judge(endpoint, tried, now)
            until = None if release or disabled else now + self.lease
            if not await store.renew_lease(uow.session, endpoint.id, self.owner, until, state):
                raise LeaseLost(endpoint.id)
            await store.record_attempts(uow.session, [w[0] for w in writes], [w[1] for w in writes])
            if disabled:
                await self._disabled(uow, endpoint, disabled, now)
        return _updated(endpoint, state)

    async def _disabled(
        self, uow: UnitOfWork, endpoint: EndpointRow, reason: DisabledReason, now: datetime
    ) -> None:
        why = {
            DisabledReason.GONE: "it answered 410 Gone",
            DisabledReason.FAILING: "every attempt to it has failed for 5 days",
        }[reason]
        await uow.append_event(
            "webhook_endpoint.disabled",
            {"webhook_endpoint_id": endpoint.id, "reason": reason.value},
            tenant_id=endpoint.tenant_id,
            subject=endpoint.id,
        )
        logger.warning("webhook endpoint disabled", extra={"endpoint": endpoint.id, "reason": reason.value})
        if self.mail is None or self.admins is None:
            return
        body = (
            f"Nexus disabled your webhook endpoint {endpoint.id} ({_host(endpoint.url)}) because {why}.\n\n"
            "Events published meanwhile are kept. Fix the receiver, enable the endpoint again "
            "(UpdateWebhookEndpoint) and use RedeliverEvents to catch up.\n"
        )
        for email in await self.admins(uow, endpoint.tenant_id):
            await self.mail(uow, email, "Your webhook endpoint was disabled", body)

    # --- retention ----------------------------------------------------------------------

    async def sweep(self) -> int:
        """Delete finished deliveries older than the retention (30 days), in batches."""
        removed = 0
        while True:
            async with self.db.unit_of_work() as uow:
                count = await store.delete_finished_before(
                    uow.session, self.clock.now() - rules.RETENTION, SWEEP_BATCH
                )
            removed += count
            if count < SWEEP_BATCH:
                return removed


def _judge(
    endpoint: EndpointRow, tried: list[Tried], now: datetime
) -> tuple[dict[str, Any], DisabledReason | None, list[tuple[dict[str, Any], dict[str, Any]]]]:
    """What the attempts mean: the endpoint's new columns, whether it is now disabled and
    why, and the rows to write for each attempt."""
    failing_since = endpoint.failing_since
    hold_until = endpoint.hold_until if endpoint.hold_until and endpoint.hold_until > now else None
    disabled: DisabledReason | None = None
    writes = []
    for t in tried:
        verdict = rules.verdict(t.outcome)
        attempts = t.delivery.attempt_count + 1
        retry = None if verdict is Verdict.SUCCEEDED else rules.next_attempt(attempts, t.outcome, t.at)
        if verdict is Verdict.SUCCEEDED:
            status, failing_since = Status.SUCCEEDED, None
        else:
            status = Status.RETRYING if retry is not None else Status.FAILED
            failing_since = failing_since or t.at
        if verdict is Verdict.UNREACHABLE and retry is not None:
            hold_until = retry
        if verdict is Verdict.GONE:
            disabled = DisabledReason.GONE
        elif verdict is not Verdict.SUCCEEDED and rules.failing_too_long(failing_since, t.at):
            disabled = DisabledReason.FAILING
        error = "" if verdict is Verdict.SUCCEEDED else rules.failure_text(t.outcome)
        writes.append(
            (
                {
                    "id": t.delivery.id,
                    "status": status.value,
                    "attempt_count": attempts,
                    "response_status_code": t.outcome.status_code,
                    "last_error": error,
                    "last_attempt_time": t.at,
                    "next_attempt_time": retry,
                },
                {
                    "delivery_id": t.delivery.id,
                    "attempt": attempts,
                    "endpoint_id": endpoint.id,
                    "attempt_time": t.at,
                    "response_status_code": t.outcome.status_code,
                    "latency_ms": min(int(t.outcome.latency.total_seconds() * 1000), 2**31 - 1),
                    "response_excerpt": t.outcome.excerpt,
                    "error": error,
                    "next_retry_time": retry,
                },
            )
        )
    state: dict[str, Any] = {"failing_since": failing_since, "hold_until": hold_until}
    if disabled is not None:
        state.update(enabled=False, disabled_reason=disabled.value, hold_until=None, update_time=now)
    return state, disabled, writes


def _updated(endpoint: EndpointRow, state: dict[str, Any]) -> EndpointRow:
    return replace(endpoint, **{k: v for k, v in state.items() if k in EndpointRow.__dataclass_fields__})


def _body(stored: StoredEvent) -> bytes:
    message = json_format.MessageToDict(convert.event(stored), preserving_proto_field_name=True)
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()


def _host(url: str) -> str:
    return urlsplit(url).hostname or "?"
