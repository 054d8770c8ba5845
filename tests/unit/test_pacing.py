"""common/pacing.py: a paced loop lets other ready work run once its budget is spent, and
what it builds is what the unpaced loop would have built."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime

import pytest

from nexus_server.common.pacing import Pacer


def _work(seconds: float) -> None:
    """CPU on the loop's thread, as a flush's row building is (not a sleep)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def test_a_long_paced_loop_lets_a_ready_task_run_in_the_middle() -> None:
    ran_at: list[int] = []
    done: list[int] = []
    items = list(range(50))

    async def other() -> None:
        ran_at.append(len(done))

    pacer = Pacer(budget=0.0005, pause=0.001)
    task = asyncio.ensure_future(other())  # ready, waiting for the loop
    async for part in pacer.slices(items, size=5):
        for item in part:
            _work(0.0002)  # holds the loop: 1 ms a slice, over the budget
            done.append(item)
    await task
    assert done == items
    assert ran_at and 0 < ran_at[0] < len(items)  # it ran while the loop was still going


async def test_work_under_the_budget_never_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def counting_sleep(delay: float) -> None:
        slept.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", counting_sleep)
    pacer = Pacer(budget=60.0)
    parts = [list(part) async for part in pacer.slices(list(range(250)), size=100)]
    assert parts == [list(range(100)), list(range(100, 200)), list(range(200, 250))]
    assert slept == []


async def test_json_array_is_json_dumps_of_the_rows_in_slices() -> None:
    when = datetime(2026, 12, 7, 21, 0, tzinfo=UTC)
    items = [(f"t{i % 3}", i, when) for i in range(257)]

    def row(item: tuple[str, int, datetime]) -> dict[str, object]:
        return {"tenant": item[0], "n": item[1], "at": item[2]}

    def iso(value: object) -> str:
        assert isinstance(value, datetime)
        return value.isoformat()

    encoded = await Pacer(budget=0.0).json_array(items, row, default=iso)
    assert json.loads(encoded) == [{"tenant": t, "n": n, "at": when.isoformat()} for t, n, _ in items]
    assert await Pacer().json_array([], row) == "[]"
