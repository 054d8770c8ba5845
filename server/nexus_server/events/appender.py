"""Group commit: concurrent PublishEvent calls of one tenant share one transaction.

A tenant's appends serialise on its head row (PostgreSQL) or on the one writer (SQLite), so
one publish per transaction caps a tenant at one commit's round trips per event, and each
commit wakes every subscriber for a single event. Here the calls that arrive while a
tenant's commit is in flight wait in that tenant's queue and go together in the next one:

- an idle tenant's publish starts its transaction at once (no linger, no timer);
- under load a commit carries what queued meanwhile (up to `max_group`), so the fan-out
  offers it to each stream in one step and a stream asking for batches gets it in one
  message (subscription.py);
- each call keeps its own answer: an idempotency key already used with another envelope
  fails that call alone (its checks only read), and a key repeated inside one group
  returns the first event, as across groups;
- a caller that gave up before its group began appends nothing (one that gives up during
  its commit is stored, as when a lone call's client leaves just as it commits); a failed
  commit fails every call of its group with its error, and none of them was stored.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

from nexus_server.common.errors import NexusError, Unavailable
from nexus_server.db.uow import Database, StoredEvent
from nexus_server.events import workflows
from nexus_server.events.envelope import Draft

MAX_GROUP = 64


@dataclass(frozen=True)
class _Pending:
    publisher_key_id: str
    draft: Draft
    answer: asyncio.Future[StoredEvent]


class Appender:
    def __init__(self, db: Database, max_group: int = MAX_GROUP):
        self.db = db
        self.max_group = max_group
        self._queues: dict[str, deque[_Pending]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.commits = 0  # transactions committed (tests read how calls were grouped)
        self.appended = 0  # events those transactions stored

    async def publish(self, *, tenant_id: str, publisher_key_id: str, draft: Draft) -> StoredEvent:
        """Append `draft` to the tenant's log (workflows.publish's rules, checked there: bad
        input fails that call alone, before its append) and return it."""
        answer: asyncio.Future[StoredEvent] = asyncio.get_running_loop().create_future()
        queue = self._queues.get(tenant_id)
        if queue is None:
            queue = self._queues[tenant_id] = deque()
            task = asyncio.create_task(self._drain(tenant_id, queue))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        queue.append(_Pending(publisher_key_id, draft, answer))
        # Cancelling this await cancels `answer`: the drain then skips the call.
        return await answer

    async def _drain(self, tenant_id: str, queue: deque[_Pending]) -> None:
        try:
            while queue:
                group: list[_Pending] = []
                while queue and len(group) < self.max_group:
                    pending = queue.popleft()
                    if not pending.answer.done():
                        group.append(pending)
                if group:
                    await self._commit(tenant_id, group)
        finally:
            # No await between the last emptiness check and here: a publish that finds
            # no queue starts a new drain.
            if self._queues.get(tenant_id) is queue:
                del self._queues[tenant_id]

    async def _commit(self, tenant_id: str, group: list[_Pending]) -> None:
        answers: list[StoredEvent | NexusError] = []
        try:
            async with self.db.unit_of_work() as uow:
                for pending in group:
                    try:
                        answers.append(
                            await workflows.publish(
                                uow,
                                tenant_id=tenant_id,
                                publisher_key_id=pending.publisher_key_id,
                                draft=pending.draft,
                            )
                        )
                    except NexusError as error:
                        # Raised by reads and checks before this call's append: the
                        # transaction is still good for the others.
                        answers.append(error)
        except BaseException as error:
            failure: BaseException = error
            if isinstance(error, asyncio.CancelledError):  # the server is stopping
                failure = Unavailable(
                    "the server is stopping; publish again (safely, with an idempotency key)"
                )
            for pending in group:
                if not pending.answer.done():
                    pending.answer.set_exception(failure)
            if not isinstance(error, Exception):
                raise
            return
        self.commits += 1
        for pending, answer in zip(group, answers, strict=True):
            if isinstance(answer, NexusError):
                if not pending.answer.done():
                    pending.answer.set_exception(answer)
                continue
            self.appended += 1
            if not pending.answer.done():  # a caller that gave up mid-commit: stored all the same
                pending.answer.set_result(answer)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
