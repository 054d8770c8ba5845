"""`python -m bench [SCENARIO ...]`: run the baseline and the scenarios, print one table.

Targets are reported as PASS/FAIL words, never asserted: the exit status is 0 unless the
bench itself could not run (a server that would not start, a client that crashed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from bench.load import LoadFailed, LoadOptions, run_load
from bench.procs import load_average, machine_busy
from bench.report import Row, as_json, median_rows, render
from bench.scenarios import SCENARIOS, Scenario, by_name
from bench.servers import ServerFailed, running

QUICK = LoadOptions(clients=2, concurrency=16, duration=1.0, warmup=0.5)


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    try:
        return float(raw) if raw else default
    except ValueError:
        raise SystemExit(f"{name}={raw!r} is not a number") from None


def _options(args: argparse.Namespace) -> LoadOptions:
    base = QUICK if args.quick else LoadOptions()
    pick = {
        "clients": (args.clients, "BENCH_CLIENTS", int),
        "concurrency": (args.concurrency, "BENCH_CONCURRENCY", int),
        "channels": (args.channels, "BENCH_CHANNELS", int),
        "duration": (args.duration, "BENCH_DURATION", float),
        "warmup": (args.warmup, "BENCH_WARMUP", float),
    }
    values = {}
    for name, (flag, env, kind) in pick.items():
        value = flag if flag is not None else _env_number(env, getattr(base, name))
        values[name] = kind(value)
        if values[name] <= 0 and name != "warmup":
            raise SystemExit(f"--{name} must be positive")
    pin = args.pin and os.environ.get("BENCH_PIN", "1") != "0"
    return dataclasses.replace(base, pin=pin, **values)


def _pinning(pin: bool) -> tuple[str, str]:
    """(server CPUs, client CPUs) as taskset-style lists; ("", "") when not pinning."""
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or len(cpus) < 2:
        return "", ""
    return str(cpus[0]), ",".join(str(c) for c in cpus[1:])


def _placement(pin: bool) -> str:
    server, clients = _pinning(pin)
    cores = len(os.sched_getaffinity(0))
    if not server:
        return f"{cores} cores shared by server and clients"
    return f"server pinned to CPU {server}, clients to CPU {clients}"


def run_scenario(scenario: Scenario, options: LoadOptions, workdir: Path) -> Row:
    options = dataclasses.replace(options, **scenario.load)
    server_cpus, client_cpus = _pinning(options.pin)
    options = dataclasses.replace(options, client_cpus=client_cpus)
    busy0, t0 = machine_busy(), time.monotonic()
    try:
        with running(scenario.server, workdir / scenario.name, server_cpus) as server:
            if scenario.workload is not None:
                workload = scenario.workload
            else:
                assert scenario.prepare is not None  # Scenario checks it has one of the two
                workload = scenario.prepare(server)
            # A streaming workload (bench/stream_load.py) brings its own driver.
            drive = getattr(workload, "drive", None)
            if drive is not None:
                result = drive(server, options)
            else:
                result = run_load(server.address, workload, server.pid, options)
        busy = (machine_busy() - busy0) / max(time.monotonic() - t0, 1e-9)
        return Row(scenario, result, server_cpus=server_cpus, machine_cores=busy, load=load_average())
    except (ServerFailed, LoadFailed) as error:
        return Row(scenario, None, str(error))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "scenarios", nargs="*", help="scenario names (default: all; the baseline always runs)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 0.5 s warm-up, 1 s per scenario")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--duration", type=float, help="measured seconds per scenario [BENCH_DURATION, 5]")
    parser.add_argument("--warmup", type=float, help="seconds of load before measuring [BENCH_WARMUP, 1]")
    parser.add_argument("--clients", type=int, help="client processes [BENCH_CLIENTS, 2]")
    parser.add_argument("--concurrency", type=int, help="in-flight calls per client [BENCH_CONCURRENCY, 32]")
    parser.add_argument("--channels", type=int, help="channels (connections) per client [BENCH_CHANNELS, 1]")
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="let server and clients share all CPUs [BENCH_PIN=0]",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=int(_env_number("BENCH_ROUNDS", 1)),
        help="run the baseline and the scenarios this many times, interleaved, and judge each "
        "row by its median round [BENCH_ROUNDS, 1]",
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file as JSON")
    args = parser.parse_args(argv)

    if args.list:
        for s in SCENARIOS:
            print(f"{s.name:16} {s.description}")
        return 0
    scenarios = by_name(args.scenarios)
    options = _options(args)
    if args.rounds < 1:
        raise SystemExit("--rounds must be at least 1")
    rounds: list[list[Row]] = []
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="nexus-bench-") as tmp:
        for number in range(args.rounds):
            rounds.append([])
            for scenario in scenarios:
                label = f" (round {number + 1} of {args.rounds})" if args.rounds > 1 else ""
                print(f"running {scenario.name}{label} …", file=sys.stderr, flush=True)
                rounds[-1].append(run_scenario(scenario, options, Path(tmp) / str(number)))
    rows = rounds[0] if args.rounds == 1 else median_rows(rounds)

    rounds_text = (
        f"{args.rounds} interleaved rounds, each row from its median round; " if args.rounds > 1 else ""
    )
    header = (
        f"Nexus bench: {options.clients} client processes × {options.concurrency} in flight, "
        f"{options.channels} channel(s) each; {options.warmup:g} s warm-up + {options.duration:g} s measured "
        f"per scenario; {_placement(options.pin)}; {rounds_text}"
        f"Python {platform.python_version()}; took {time.monotonic() - began:.1f} s\n"
        f"Ratios (×) are to '{scenarios[0].name}' from this same run; "
        "latency is per successful call, CPU is the server process's utime+stime."
    )
    print(render(rows, header))
    if args.json:
        args.json.write_text(json.dumps(as_json(rows), indent=2) + "\n")
    return 1 if any(row.result is None for row in rows) else 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        print("bench: interrupted; servers and clients stopped", file=sys.stderr)
        raise SystemExit(130) from None
