"""The table `make bench` prints: absolute numbers, ratios to the baseline, targets."""

from __future__ import annotations

import math
import os
import statistics
from dataclasses import asdict, dataclass
from typing import Any

from bench.load import LoadResult
from bench.scenarios import Scenario, Target


@dataclass
class Row:
    scenario: Scenario
    result: LoadResult | None  # None when the scenario could not run
    failure: str = ""
    server_cpus: str = ""  # the CPUs the server was pinned to ("" = not pinned)
    # With --rounds: the baseline of the round this row was measured in (ratios are to it),
    # and each target's value in every round, for the spread printed beside the verdict.
    baseline: LoadResult | None = None
    spread: tuple[tuple[float, ...], ...] = ()
    # How busy the whole machine was while the row ran (its server's start included), in
    # cores, and the load average at its end: beside the row's own server and client cores,
    # they tell a slow row from a busy machine.
    machine_cores: float = math.nan
    load: float = math.nan
    # With --rounds: the row's calls/s and µs/call in every round.
    rounds: tuple[tuple[float, float], ...] = ()

    def bound(self) -> str:
        """What limited the run: the server's CPU, the clients' CPU, the whole machine, or none."""
        r = self.result
        if r is None:
            return "-"
        cores = len(os.sched_getaffinity(0))
        if not self.server_cpus:
            return "machine" if r.server_cores + r.client_cores >= 0.9 * cores else "-"
        if r.server_cores >= 0.9 * len(self.server_cpus.split(",")):
            return "server"
        if r.options.client_cpus and r.client_cores >= 0.9 * len(r.options.client_cpus.split(",")):
            return "CLIENTS"
        return "-"


def _ratio(value: float, base: float) -> float:
    return value / base if base and not math.isnan(base) else math.nan


def _fmt(value: float, spec: str) -> str:
    return "-" if math.isnan(value) else format(value, spec)


COLUMNS = (
    ("scenario", "<", 14),
    ("calls/s", ">", 8),
    ("p50 ms", ">", 7),
    ("p99 ms", ">", 7),
    ("srv µs/call", ">", 11),
    ("srv cores", ">", 9),
    ("cli cores", ">", 9),
    ("errors", ">", 6),
    ("bound", "<", 7),
    ("× thrpt", ">", 7),
    ("× µs/call", ">", 9),
    ("× p99", ">", 6),
)


def _line(cells: list[str]) -> str:
    return "  ".join(
        format(c, f"{align}{width}") for c, (_, align, width) in zip(cells, COLUMNS, strict=True)
    )


def render(rows: list[Row], header: str) -> str:
    baseline = rows[0].result if rows and rows[0].result else None
    base_name = rows[0].scenario.name if rows else "baseline"
    out = [header, "", _line([name for name, _, _ in COLUMNS]), _line(["-" * w for _, _, w in COLUMNS])]
    notes: list[str] = []
    first = baseline
    named = {row.scenario.name: row for row in rows}  # for targets `versus` another row
    for row in rows:
        baseline = row.baseline or first
        r = row.result
        if r is None:
            out.append(_line([row.scenario.name, *(["-"] * (len(COLUMNS) - 1))]))
            out.append(f"    FAILED TO RUN: {row.failure}")
            continue
        p99 = r.percentile(99)
        if baseline is not None:
            ratios = [
                _ratio(r.throughput, baseline.throughput),
                _ratio(r.cpu_per_call, baseline.cpu_per_call),
                _ratio(p99, baseline.percentile(99)),
            ]
        else:
            ratios = [math.nan] * 3
        n_errors = sum(r.errors.values())
        out.append(
            _line(
                [
                    row.scenario.name,
                    _fmt(r.throughput, ".0f"),
                    _fmt(r.percentile(50) * 1e3, ".2f"),
                    _fmt(p99 * 1e3, ".2f"),
                    _fmt(r.cpu_per_call * 1e6, ".1f"),
                    _fmt(r.server_cores, ".2f"),
                    _fmt(r.client_cores, ".2f"),
                    str(n_errors),
                    row.bound(),
                    *(_fmt(x, ".2f") for x in ratios),
                ]
            )
        )
        out += [f"    {note}" for note in getattr(r, "notes", ())]  # a driver's own notes
        if r.server_parts and r.window > 0:
            shares = [cpu / r.window for cpu in r.server_parts]
            out.append(
                f"    server processes: {shares[0]:.2f} cores in the one started, "
                f"{' + '.join(f'{c:.2f}' for c in shares[1:])} in its children"
            )
        if not math.isnan(row.machine_cores):
            cores = len(os.sched_getaffinity(0))
            out.append(
                f"    machine: {row.machine_cores:.2f} of {cores} cores busy during the row, "
                f"load {row.load:.2f} (the row's own server and clients: "
                f"{r.server_cores + r.client_cores:.2f})"
            )
        if len(row.rounds) > 1:
            rates = sorted(x for x, _ in row.rounds)
            cpus = sorted(y * 1e6 for _, y in row.rounds)
            out.append(
                f"    rounds: calls/s {rates[0]:.0f}–{rates[-1]:.0f}, "
                f"srv µs/call {cpus[0]:.1f}–{cpus[-1]:.1f} ({len(rates)} rounds)"
            )
        if r.calls == 0 and not n_errors:
            out.append("    NO CALL COMPLETED in the measured window: the server did not answer in time")
        if n_errors:
            codes = ", ".join(f"{code} ×{n}" for code, n in sorted(r.errors.items()))
            out.append(f"    ERRORS: {codes} (the numbers above count successful calls only)")
        for index, target in enumerate(row.scenario.targets):
            reference = _reference(target, baseline, named)
            if reference is None and target.relative:
                missing = f"{target.versus} not in this run" if target.versus else "no baseline"
                out.append(f"    target: {target.describe(base_name)}  →  {missing}: NOT CHECKED")
                continue
            measured = target.measure(r, reference) if reference is not None else target.measure(r, r)
            if index < len(row.spread) and len(row.spread[index]) > 1:
                measured = statistics.median(row.spread[index])  # each target its own median
            verdict = "PASS" if not math.isnan(measured) and target.met(measured) else "FAIL"
            shown = f"{measured:.2f}×" if target.relative else f"{measured:.2f}"
            if index < len(row.spread) and len(row.spread[index]) > 1:
                values = sorted(row.spread[index])
                shown += f" (median of {len(values)} rounds; {values[0]:.2f}–{values[-1]:.2f})"
            out.append(f"    target: {target.describe(base_name)}  →  {shown}  {verdict}")
        if row.bound() == "CLIENTS":
            notes.append(
                f"{row.scenario.name}: the clients' CPUs were saturated before the server's: its calls/s "
                "understate the server; rerun with more client CPUs, or trust µs/call only."
            )
        elif row.bound() == "machine":
            notes.append(
                f"{row.scenario.name}: server and clients shared and saturated every core, so calls/s and "
                "latency include the clients' cost; µs/call is the steady column."
            )
    if notes:
        out += ["", "notes:", *(f"  {n}" for n in notes)]
    return "\n".join(out)


def median_rows(rounds: list[list[Row]]) -> list[Row]:
    """One row per scenario from interleaved rounds (each round: the baseline, then every
    scenario): the round where the scenario's first target (else its CPU per call relative to
    that round's baseline) is the median, with its own round's baseline; every target is
    judged by the median of its own values over the rounds (a `versus` target by its ratio
    to that row of the same round). On a machine whose
    speed drifts within minutes, a ratio to the baseline measured moments before is steadier
    than one to a baseline measured once at the start."""
    chosen = []
    named = [{row.scenario.name: row for row in round_} for round_ in rounds]
    for column in zip(*rounds, strict=True):
        scenario = column[0].scenario
        ran = [
            (row, round_[0].result, names)
            for row, round_, names in zip(column, rounds, named, strict=True)
            if row.result and round_[0].result
        ]
        if not ran:
            chosen.append(column[0])
            continue

        ran.sort(key=lambda entry: _judged(scenario, *entry))
        row, base, _ = ran[(len(ran) - 1) // 2]
        spread = tuple(
            tuple(
                t.measure(r.result, ref)
                for r, b, names in ran
                if r.result is not None and (ref := _reference(t, b, names)) is not None
            )
            for t in scenario.targets
        )
        rounds_ = tuple(
            (r.result.throughput, r.result.cpu_per_call) for r, _, _ in ran if r.result is not None
        )
        chosen.append(
            Row(
                row.scenario,
                row.result,
                row.failure,
                row.server_cpus,
                base,
                spread,
                row.machine_cores,
                row.load,
                rounds_,
            )
        )
    return chosen


def _reference(target: Target, baseline: LoadResult | None, named: dict[str, Row]) -> LoadResult | None:
    """What a target's ratio is to: its `versus` row's result (None when that row did not
    run), else the baseline."""
    if not target.versus:
        return baseline
    other = named.get(target.versus)
    return other.result if other is not None else None


def _judged(scenario: Scenario, row: Row, base: LoadResult | None, named: dict[str, Row]) -> float:
    """What a round is ranked by: the scenario's first target, else its CPU ratio."""
    assert row.result is not None and base is not None
    if scenario.targets:
        reference = _reference(scenario.targets[0], base, named)
        if reference is not None:
            return scenario.targets[0].measure(row.result, reference)
    return _ratio(row.result.cpu_per_call, base.cpu_per_call)


def as_json(rows: list[Row]) -> list[dict[str, Any]]:
    """Machine-readable rows (for comparing runs), without the raw latency samples."""
    data = []
    for row in rows:
        r = row.result
        entry: dict[str, Any] = {
            "scenario": row.scenario.name,
            "failure": row.failure or None,
            "machine_cores": None if math.isnan(row.machine_cores) else row.machine_cores,
            "load_average": None if math.isnan(row.load) else row.load,
        }
        if r is not None:
            entry |= {
                "calls": r.calls,
                "window_s": r.window,
                "calls_per_s": r.throughput,
                "p50_ms": r.percentile(50) * 1e3,
                "p90_ms": r.percentile(90) * 1e3,
                "p99_ms": r.percentile(99) * 1e3,
                "max_ms": r.percentile(100) * 1e3,
                "server_cpu_us_per_call": r.cpu_per_call * 1e6,
                "server_cores": r.server_cores,
                "client_cores": r.client_cores,
                "server_rss_mib": r.server_rss / 2**20,
                "server_process_cores": [cpu / r.window for cpu in r.server_parts] if r.window else [],
                "errors": r.errors,
                "load": asdict(r.options),
            }
        data.append(entry)
    return data
