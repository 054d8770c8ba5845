"""What holds a bench server's event loop: `BENCH_PROBE=<file>` (the `nexus` kind only).

A p99 far above the floor's at a load the server's CPU can carry is made of stretches in
which the loop runs one callback for milliseconds while calls wait. This probe names them:
the server runs on asyncio's own loop (uvloop's callbacks cannot be timed from Python), each
callback is timed, and those longer than BENCH_PROBE_MS (default 2) are counted by what ran
them: the coroutines a task was awaiting, innermost last, or the callback's own name. When
the server stops, a table of them (count, total, longest) goes to `<file>`.

The probe costs some CPU per callback and the loop is not the one Nexus runs by default, so
a probed row's numbers are for finding stretches, not for verdicts.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ENV = "BENCH_PROBE"


def _chain(callback: Any) -> str:
    """A task's coroutine chain (`outer > … > inner`), or a plain callback's name."""
    task = getattr(callback, "__self__", None)
    if isinstance(task, asyncio.Task):
        names: list[str] = []
        awaiting: Any = task.get_coro()
        while awaiting is not None and len(names) < 12:
            code = getattr(awaiting, "cr_code", None) or getattr(awaiting, "gi_code", None)
            if code is None:
                break
            names.append(code.co_qualname)
            awaiting = getattr(awaiting, "cr_await", None) or getattr(awaiting, "gi_yieldfrom", None)
        return " > ".join(names) or repr(task)
    return getattr(callback, "__qualname__", None) or repr(callback)


class StallProbe:
    """Times every callback the loop runs; keeps those over `threshold` seconds by chain."""

    def __init__(self, out: Path, threshold: float):
        self.out = out
        self.threshold = threshold
        # chain → (wall, thread CPU) of each stall: wall well above CPU is the loop's thread
        # waiting for a core (another process ran, or a grpc thread held the GIL), not work.
        self.stalls: dict[str, list[tuple[float, float]]] = defaultdict(list)
        self.callbacks = 0
        self.began = time.monotonic()
        # How long each of the collector's passes took, by generation. A full pass walks every
        # tracked object the caches hold, and holds the loop meanwhile.
        self.collections: dict[int, list[float]] = defaultdict(list)
        self._collecting = 0.0
        self.full: list[tuple[float, float, int]] = []  # (seconds since start, took, collected)

    def install(self) -> None:
        probe, run = self, asyncio.events.Handle._run

        def timed(handle: asyncio.events.Handle) -> None:
            began, cpu = time.perf_counter(), time.thread_time()
            run(handle)
            took = time.perf_counter() - began
            probe.callbacks += 1
            if took >= probe.threshold:
                # Read after the step, so a task's chain says where the stretch ended: the
                # await it paused at (a finished task shows its outer coroutine only).
                stall = probe.stalls[_chain(handle._callback)]  # type: ignore[attr-defined]
                stall.append((took, time.thread_time() - cpu))

        asyncio.events.Handle._run = timed  # type: ignore[method-assign]
        gc.callbacks.append(self._collected)

    def _collected(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._collecting = time.perf_counter()
        else:
            took = time.perf_counter() - self._collecting
            self.collections[info["generation"]].append(took)
            if info["generation"] == 2:
                self.full.append((time.monotonic() - self.began, took, info["collected"]))

    def write(self) -> None:
        seconds = time.monotonic() - self.began
        rows = sorted(self.stalls.items(), key=lambda kv: -sum(wall for wall, _ in kv[1]))
        lines = [
            f"== server pid {os.getpid()}",
            f"{self.callbacks} callbacks in {seconds:.1f} s (start-up included); "
            f"{sum(len(v) for v in self.stalls.values())} took ≥ {self.threshold * 1000:.1f} ms",
            f"{'count':>6} {'total ms':>9} {'max ms':>7} {'cpu ms':>7}  chain (cpu: the thread's, of all)",
        ]
        for chain, took in rows:
            wall = [w * 1000 for w, _ in took]
            cpu = sum(c for _, c in took) * 1000
            lines.append(f"{len(took):>6} {sum(wall):>9.1f} {max(wall):>7.1f} {cpu:>7.1f}  {chain}")
        for generation, took in sorted(self.collections.items()):
            lines.append(
                f"gc generation {generation}: {len(took)} passes, {sum(took) * 1000:.1f} ms in all, "
                f"longest {max(took) * 1000:.1f} ms"
            )
        lines += [
            f"  full pass at {at:.1f} s: {took * 1000:.1f} ms, {n} collected" for at, took, n in self.full
        ]
        with self.out.open("a") as out:  # a run's servers (a peak probe's, each row's) add theirs
            out.write("\n".join(lines) + "\n\n")


def from_env() -> StallProbe | None:
    """The probe BENCH_PROBE asks for, installed, or None."""
    out = os.environ.get(ENV)
    if not out:
        return None
    probe = StallProbe(Path(out), float(os.environ.get("BENCH_PROBE_MS", "2")) / 1000)
    probe.install()
    return probe
