"""The one way to run background work: a named step repeated at a jittered interval.

Every capability's poller, flusher and sweeper is one of these, so they behave alike: the
step runs after each interval (±`jitter`, so replicas started together do not hit the
database in lockstep); an error is logged with its traceback and the loop goes on (the next
interval retries it); cancellation at shutdown ends it at once; and the gauge
`nexus_background_last_success_timestamp_seconds{task=...}` says when each task last
succeeded, so a stuck poller shows on a dashboard rather than in a bug report.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry, Gauge

log = logging.getLogger("nexus.background")

# Not registered by default: `register` adds it to a server's registry (tests build many).
LAST_SUCCESS = Gauge(
    "nexus_background_last_success_timestamp_seconds",
    "When each background task last completed a step (Unix time).",
    ["task"],
    registry=None,
)

Sleep = Callable[[float], Awaitable[object]]
# Its own generator: jitter must not draw from (and so disturb) the global `random` state
# that other code, and Hypothesis in the tests, rely on.
_RANDOM = random.Random()


def register(registry: CollectorRegistry) -> None:
    # Already there when several servers in one process share a registry.
    with contextlib.suppress(ValueError):
        registry.register(LAST_SUCCESS)


def jittered(interval: float, jitter: float, rand: Callable[[], float] = _RANDOM.random) -> float:
    """`interval` scaled by a factor in [1 - jitter, 1 + jitter]."""
    return interval * (1 + jitter * (2 * rand() - 1))


async def every(
    task: str,
    interval: float,
    step: Callable[[], Awaitable[object]],
    *,
    jitter: float = 0.1,
    wake: asyncio.Event | None = None,
    sleep: Sleep = asyncio.sleep,
    logger: logging.Logger = log,
) -> None:
    """Run `step` after every `interval` seconds, forever (until cancelled). With `wake`,
    setting the event runs the step at once (an outbox woken by the commit that filled it,
    still polling for what other replicas queued)."""
    gauge = LAST_SUCCESS.labels(task=task)  # 0 until the first success: visible from the start
    while True:
        pause = jittered(interval, jitter)
        if wake is None:
            await sleep(pause)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), pause)
            wake.clear()
        try:
            await step()
        except Exception:
            logger.warning("background task %s failed; retrying", task, exc_info=True)
        else:
            gauge.set(time.time())
