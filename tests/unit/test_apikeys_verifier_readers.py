"""The key verifier's batched reader: a cache miss that arrives just as the only reader
finishes still gets read (it once waited until some other key missed: minutes, under a
publisher's burst)."""

from __future__ import annotations

import asyncio
import types
from typing import Any

from nexus_server.apikeys import verifier


async def test_a_miss_arriving_as_the_reader_finishes_is_read() -> None:
    keys = verifier.KeyVerifier(
        types.SimpleNamespace(clock=None),  # type: ignore[arg-type]
        types.SimpleNamespace(on_revoke=lambda _: None),  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
    )
    loop = asyncio.get_running_loop()
    gate: asyncio.Future[None] = loop.create_future()
    reads: list[list[str]] = []

    async def read(batch: list[str]) -> None:  # the database round trip
        reads.append(batch)
        if len(reads) == 1:
            await gate
        for key_id in batch:
            future = keys._loading.pop(key_id)
            future.set_result(verifier._entry_of(None, loop.time()))

    keys._read = read  # type: ignore[method-assign]
    first = asyncio.ensure_future(keys._entry("A"))
    await asyncio.sleep(0.01)  # the reader is inside its read of A
    second: list[asyncio.Task[Any]] = []

    def release_then_miss() -> None:
        gate.set_result(None)  # the reader's last step runs first...
        second.append(loop.create_task(keys._entry("B")))  # ...then a miss, before its done callback

    loop.call_soon(release_then_miss)
    await first
    await asyncio.sleep(0.01)  # B's task has run
    entry = await asyncio.wait_for(second[0], 2)  # before the fix: no reader, forever
    assert entry.row is None
    assert reads == [["A"], ["B"]]
