"""Scenarios: which server, which call, which targets. Add one by appending to SCENARIOS.

A scenario names a server (bench.servers.ServerSpec), the workload its clients repeat
(bench.load.Workload: method, request bytes, metadata) and the targets its row is judged
by. If the workload needs data the server must hold first (API keys, users, refresh
tokens), give `prepare` instead of `workload`: it runs in the bench process once the server
is up, may call it or write to `server.database_url`, and returns the workload. Scenarios
that need other load settings (say, an open-loop rate) set `load`, a dict of
bench.load.LoadOptions fields applied over the command line's.

The first scenario is the baseline: every other row is divided by it (same run, same machine).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bench.load import LoadResult, Unary, Workload
from bench.servers import ECHO, ECHO_UVLOOP, NEXUS, RunningServer, ServerSpec

# Metrics a target can name: how to read it from a result, its unit, and its ratio's name.
METRICS: dict[str, tuple[Callable[[LoadResult], float], str]] = {
    "throughput": (lambda r: r.throughput, "calls/s"),
    "cpu_per_call": (lambda r: r.cpu_per_call * 1e6, "µs"),
    "p50": (lambda r: r.percentile(50) * 1e3, "ms"),
    "p99": (lambda r: r.percentile(99) * 1e3, "ms"),
    "rss": (lambda r: r.server_rss / 2**20, "MiB"),  # the server's memory at the window's end
}
_OPS = {">=": (operator.ge, "≥"), "<=": (operator.le, "≤")}


@dataclass(frozen=True)
class Target:
    """`metric op value`, either as a ratio to the baseline (relative) or in the metric's unit.

    With `versus`, the ratio is to that row of the same run (same round) instead of the
    baseline: a floor row, or the same server with a feature switched off. Its line says
    NOT CHECKED when that row was not run.
    """

    metric: str  # a key of METRICS
    op: str  # ">=" or "<="
    value: float
    relative: bool = True
    source: str = ""  # where the target comes from, e.g. "issue 5"
    versus: str = ""  # a scenario's name: the ratio is to its row, not to the baseline

    def __post_init__(self) -> None:
        if self.metric not in METRICS or self.op not in _OPS or (self.versus and not self.relative):
            raise ValueError(f"bad target {self.metric} {self.op} {self.value}")

    def describe(self, baseline: str) -> str:
        unit = f"× {self.versus or baseline}" if self.relative else f" {METRICS[self.metric][1]}"
        text = f"{self.metric} {_OPS[self.op][1]} {self.value:g}{unit}"
        return f"{text} ({self.source})" if self.source else text

    def measure(self, result: LoadResult, baseline: LoadResult) -> float:
        """The value judged; `baseline` is the `versus` row's result when there is one."""
        read = METRICS[self.metric][0]
        value = read(result)
        return value / read(baseline) if self.relative else value

    def met(self, measured: float) -> bool:
        return bool(_OPS[self.op][0](measured, self.value))


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    server: ServerSpec
    workload: Workload | None = None
    prepare: Callable[[RunningServer], Workload] | None = None
    targets: tuple[Target, ...] = ()
    load: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.workload is None) == (self.prepare is None):
            raise ValueError(f"scenario {self.name}: give exactly one of workload and prepare")


# grpc.health.v1.HealthCheckRequest(service="") serializes to zero bytes.
HEALTH_CHECK = Unary("/grpc.health.v1.Health/Check", b"")

SCENARIOS: list[Scenario] = [
    Scenario(
        "echo",
        "bare grpc.aio, trivial Health/Check servicer, no interceptors (the baseline)",
        ECHO,
        HEALTH_CHECK,
    ),
    Scenario(
        "echo-uvloop",
        "the same bare server on uvloop, Nexus's default loop (no target: shows the loop's share)",
        ECHO_UVLOOP,
        HEALTH_CHECK,
    ),
    Scenario(
        "nexus-health",
        "Nexus Health/Check through its full interceptor chain",
        NEXUS,
        HEALTH_CHECK,
        targets=(
            # Issue 5 holds an API-key-authenticated, rate-limited RPC to these; the bare
            # chain is part of that call, so it has to fit well inside the same budget.
            Target("throughput", ">=", 0.75, source="issue 5's budget for an authenticated call"),
            Target("cpu_per_call", "<=", 1.33, source="issue 5's budget for an authenticated call"),
        ),
    ),
]


def _register_capabilities() -> None:
    # Capabilities keep their scenarios in bench/scenarios_<cap>.py (imported late: they
    # import Scenario and Target from here).
    from bench import scenarios_apikeys

    SCENARIOS.extend(scenarios_apikeys.scenarios())

    from bench import scenarios_tenants

    SCENARIOS.extend(scenarios_tenants.scenarios())

    from bench import scenarios_identity

    SCENARIOS.extend(scenarios_identity.scenarios())

    from bench import scenarios_events

    SCENARIOS.extend(scenarios_events.scenarios())

    from bench import scenarios_webhooks

    SCENARIOS.extend(scenarios_webhooks.scenarios())

    from bench import scenarios_usage

    SCENARIOS.extend(scenarios_usage.scenarios())

    from bench import scenarios_workers

    SCENARIOS.extend(scenarios_workers.scenarios())


_register_capabilities()


def by_name(names: list[str]) -> list[Scenario]:
    """The baseline plus the named scenarios, in SCENARIOS order; all of them for no names."""
    known = {s.name for s in SCENARIOS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown scenario(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    baseline = SCENARIOS[0]
    return [s for s in SCENARIOS if not names or s is baseline or s.name in names]
