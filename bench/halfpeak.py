"""Open-loop rows at half of a peak probed in the same run (the p99-at-half-load targets of
issues 5 and 6): the peak is measured on a throwaway server just before the row needs it."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.load import LoadOptions, Workload
from bench.servers import RunningServer, ServerSpec


def env_load_options() -> LoadOptions:
    """The load options from the environment (the bench's flags are not visible here)."""
    defaults = LoadOptions()
    return replace(
        defaults,
        clients=int(os.environ.get("BENCH_CLIENTS", defaults.clients)),
        concurrency=int(os.environ.get("BENCH_CONCURRENCY", defaults.concurrency)),
        channels=int(os.environ.get("BENCH_CHANNELS", defaults.channels)),
    )


def probe_peak(spec: ServerSpec, prepare: Callable[[RunningServer], Workload], seconds: float) -> float:
    """Closed-loop calls/s of `prepare`'s workload on a fresh `spec` server, pinned as the
    peak row would be."""
    from bench.load import run_load
    from bench.servers import running

    options = replace(env_load_options(), duration=seconds, warmup=1.0)
    cpus = sorted(os.sched_getaffinity(0))
    server_cpus = ""
    if os.environ.get("BENCH_PIN", "1") != "0" and len(cpus) > 1:
        server_cpus = str(cpus[0])
        options = replace(options, client_cpus=",".join(str(c) for c in cpus[1:]))
    with (
        tempfile.TemporaryDirectory(prefix="nexus-bench-probe-") as tmp,
        running(spec, Path(tmp), server_cpus) as server,
    ):
        result = run_load(server.address, prepare(server), server.pid, options)
    return result.throughput


class HalfOfPeak(Mapping[str, Any]):
    """A row's load options: `rate`, half of the probed peak (or `env_var` when set), worked
    out only when the bench asks for it, once per run."""

    def __init__(self, env_var: str, row: str, probe: Callable[[], float]):
        self.env_var, self.row, self.probe = env_var, row, probe
        self.rate: float | None = None
        self.peak: float | None = None

    def __getitem__(self, name: str) -> Any:
        if name != "rate":
            raise KeyError(name)
        if self.rate is None:
            fixed = os.environ.get(self.env_var, "")
            if fixed:
                self.rate = float(fixed)
            else:
                print(f"running {self.row}'s peak probe …", file=sys.stderr, flush=True)
                self.peak = self.probe()
                self.rate = max(1.0, round(self.peak / 2))
        return self.rate

    def __iter__(self) -> Iterator[str]:
        return iter(("rate",))

    def __len__(self) -> int:
        return 1

    def describe(self) -> str:
        """Which rate the row ran at, and why (for its target line)."""
        if self.peak is not None:
            return f"at {self.rate:.0f} calls/s = half of the {self.peak:.0f} calls/s peak probed before it"
        return f"at {self.env_var}={self.rate:.0f} calls/s"
