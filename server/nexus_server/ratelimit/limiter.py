"""The limiter the layer and VerifyApiKey use: a backend, and what to do when it is down.

With Redis configured, an unreachable Redis is handled by `on_down`:
- `local` (the default): each replica falls back to its own in-process counters, so every
  limit still holds per replica (at most replicas × limit overall) and calls keep flowing;
- `open`: calls are admitted unlimited;
- `closed`: calls are refused (RESOURCE_EXHAUSTED, retry after a second).
After a failure Redis is not tried again for `retry_seconds`, so an outage costs one
timeout per replica per interval, not one per call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from nexus_server.ratelimit.limits import Backend, BackendUnavailable, Decision, Limit
from nexus_server.ratelimit.memory import MemoryBackend

log = logging.getLogger("nexus.ratelimit")
ON_DOWN = ("local", "open", "closed")


class Limiter:
    def __init__(
        self,
        backend: Backend,
        *,
        on_down: str = "local",
        fallback: MemoryBackend | None = None,
        retry_seconds: float = 1.0,
    ):
        if on_down not in ON_DOWN:
            raise ValueError(f"on_down must be one of {ON_DOWN}")
        self.backend = backend
        self.on_down = on_down
        self.fallback = fallback or MemoryBackend()
        self.retry_seconds = retry_seconds
        self._down_until = 0.0
        # The in-process backend never awaits: call it directly, saving a coroutine a call.
        self._memory = backend if isinstance(backend, MemoryBackend) else None

    async def charge(self, limits: Sequence[Limit], cost: int = 1) -> Decision:
        """Raises BackendUnavailable only when the backend is down and `on_down` is closed."""
        if not limits:
            return Decision(True, (), 0.0)
        if self._memory is not None:
            return self._memory.charge_now(limits, cost)
        if time.monotonic() >= self._down_until:
            try:
                return await self.backend.charge(limits, cost)
            except BackendUnavailable as error:
                self._down_until = time.monotonic() + self.retry_seconds
                log.warning("rate-limit store unreachable (%s); failing %s", error, self.on_down)
        if self.on_down == "local":
            return self.fallback.charge_now(limits, cost)
        if self.on_down == "open":
            return Decision(True, (), 0.0)
        raise BackendUnavailable("the rate-limit store is unreachable")
