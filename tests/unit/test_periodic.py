"""common/periodic.py: a step after every jittered interval, errors logged and survived,
the last success on a gauge, cancellation ends it. Sleeps are injected, never timed."""

from __future__ import annotations

import asyncio
import logging

import pytest
from prometheus_client import CollectorRegistry

from nexus_server.common import periodic


class Steps:
    """A step that fails on the runs it is told to, and a sleep that ends the loop after
    `runs` intervals (by cancelling it, as the server's shutdown does)."""

    def __init__(self, runs: int, failing: set[int]):
        self.runs, self.failing = runs, failing
        self.done: list[int] = []
        self.slept: list[float] = []

    async def step(self) -> None:
        run = len(self.done) + 1
        self.done.append(run)
        if run in self.failing:
            raise RuntimeError(f"run {run} failed")

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        if len(self.slept) > self.runs:
            raise asyncio.CancelledError


def _last_success(registry: CollectorRegistry, task: str) -> float | None:
    return registry.get_sample_value("nexus_background_last_success_timestamp_seconds", {"task": task})


async def test_steps_go_on_after_an_error_which_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    steps = Steps(runs=4, failing={2})
    caplog.set_level(logging.WARNING, logger="nexus.background")
    with pytest.raises(asyncio.CancelledError):
        await periodic.every("t.errors", 5.0, steps.step, sleep=steps.sleep)
    assert steps.done == [1, 2, 3, 4]
    failures = [r for r in caplog.records if "t.errors" in r.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info is not None


async def test_the_gauge_moves_only_on_success() -> None:
    registry = CollectorRegistry()
    periodic.register(registry)
    periodic.register(registry)  # a second server on the same registry is harmless
    steps = Steps(runs=2, failing={1, 2})
    with pytest.raises(asyncio.CancelledError):
        await periodic.every("t.gauge", 1.0, steps.step, sleep=steps.sleep)
    assert _last_success(registry, "t.gauge") == 0  # shown from the start: never succeeded
    steps = Steps(runs=1, failing=set())
    with pytest.raises(asyncio.CancelledError):
        await periodic.every("t.gauge", 1.0, steps.step, sleep=steps.sleep)
    value = _last_success(registry, "t.gauge")
    assert value is not None and value > 0


async def test_intervals_are_jittered_within_bounds() -> None:
    steps = Steps(runs=200, failing=set())
    with pytest.raises(asyncio.CancelledError):
        await periodic.every("t.jitter", 10.0, steps.step, jitter=0.1, sleep=steps.sleep)
    assert all(9.0 <= s <= 11.0 for s in steps.slept)
    assert len(set(steps.slept)) > 1  # not in lockstep
    assert periodic.jittered(10.0, 0.1, rand=lambda: 0.0) == 9.0
    assert periodic.jittered(10.0, 0.1, rand=lambda: 1.0) == pytest.approx(11.0)
    assert periodic.jittered(10.0, 0.0) == 10.0


async def test_a_wake_runs_the_step_at_once() -> None:
    wake, ran = asyncio.Event(), asyncio.Event()

    async def step() -> None:
        ran.set()

    task = asyncio.create_task(periodic.every("t.wake", 3600.0, step, wake=wake))
    try:
        wake.set()  # an hour's interval: only the wake can run the step within the wait below
        await asyncio.wait_for(ran.wait(), 30)
        assert not wake.is_set()  # cleared for the next wake
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
