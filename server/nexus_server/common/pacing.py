"""Long stretches of Python on the event loop, cut so the calls in flight run between them.

A background step that turns a second's thousand metered calls into rows holds the loop for
10-20 ms at a stretch if nothing cuts it, and every call that arrives meanwhile waits all of
it: that was most of CheckPermission's p99 at half of peak (issue 18). A `Pacer` is asked
between pieces of such work; once the stretch since its last pause is longer than `budget`,
it pauses. The pause is a timer, not `sleep(0)`: a call takes several turns of the loop
(message in, handler, message out), and `sleep(0)` would put another slice of the batch
between each of them, where a timer lets everything that is ready run first. uvloop rounds
timers to whole milliseconds, so the pause is one.

The cost is wall time, not CPU: a flush of 20 ms of work takes ~20 pauses longer, inside
its transaction; background steps have the time, calls do not.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

BUDGET = 0.001  # seconds of work between pauses
PAUSE = 0.001
SLICE = 100  # items between looks at the clock: ~0.1-0.5 ms of per-item work


class Pacer:
    """One background step's clock: `breathe` between pieces of work, `slices` for loops."""

    def __init__(self, budget: float = BUDGET, pause: float = PAUSE):
        self.budget = budget
        self.pause = pause
        self._since = time.perf_counter()

    async def breathe(self) -> None:
        """Pause if the work since the last pause has run longer than the budget."""
        now = time.perf_counter()
        if now - self._since >= self.budget:
            await asyncio.sleep(self.pause)
            self._since = time.perf_counter()

    async def slices(self, items: Sequence[T], size: int = SLICE) -> AsyncIterator[Sequence[T]]:
        """`items` in slices of `size`, breathing before each (so a loop over many short
        sequences, one tenant's records each, is paced as one)."""
        for start in range(0, len(items), size):
            await self.breathe()
            yield items[start : start + size]

    async def json_array(
        self, items: Sequence[T], row: Callable[[T], Any], default: Callable[[Any], Any] | None = None
    ) -> str:
        """`json.dumps([row(item) for item in items])`, compact, built and encoded a slice at a
        time (encoding a thousand rows is milliseconds of C that holds the loop too)."""
        parts: list[str] = []
        async for part in self.slices(items):
            encoded = json.dumps([row(item) for item in part], default=default, separators=(",", ":"))
            parts.append(encoded[1:-1])
        return "[" + ",".join(parts) + "]"
