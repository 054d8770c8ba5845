"""Nexus benchmarks: each scenario is measured beside a bare grpc.aio echo server in the same run.

    servers.py    start and stop the measured server processes (parent side)
    runner.py     the server processes themselves: `python -m bench.runner echo|nexus`
    load.py       the load generator: client processes × concurrent calls, per-call latencies
    scenarios.py  Scenario and Target, and the list `make bench` runs
    report.py     the table: absolute numbers, ratios to the echo baseline, targets
    procs.py      /proc readings and keeping child processes from outliving the bench

`make bench` = `python -m bench`; see bench/README.md for how to read its table.
"""
