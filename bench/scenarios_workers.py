"""`nexus serve --workers N`'s speed, on PostgreSQL.

- **workers-1** and **workers-2**: apikey-unary's call (bench/scenarios_apikeys.py:
  VerifyApiKey of the caller's own key, cost 0, each worker its own key; metering on, as
  `nexus serve` runs) against bench.runner's `nexus-workers` server with 1 and with 2 worker
  processes sharing one port through SO_REUSEPORT, under one supervisor process. Both rows
  run the same load: clients unpinned (server, clients and PostgreSQL share every core; a
  pinned server would put every worker on one CPU) and 4 channels per client process, so
  the kernel, which places each connection on a worker by its address hash, has 8
  connections to spread. workers-2 is judged at ≥ 1.0× workers-1's calls/s: what a second
  worker adds on this machine. `srv µs/call` and `srv cores` are the supervisor's and the
  workers' together; a line under the row splits them per process, so a run where most
  connections landed on one worker shows it.

The database is this module's own fresh `bench_<hex>` on BENCH_POSTGRES_URL's server (see
bench/postgres.py), made when a row first needs it, its keys seeded once, dropped at exit;
without a reachable PostgreSQL the rows are left out with a note on stderr (several workers
need PostgreSQL: the embedded SQLite database is one process's).
"""

from __future__ import annotations

import sys
from typing import Any

from bench.load import Workload
from bench.postgres import BenchDatabase, SeedOnce, reachable
from bench.scenarios_apikeys import KEYS, seed_keys
from bench.servers import RunningServer

CHANNELS = 4  # per client process: connections for SO_REUSEPORT to spread over the workers

DB = BenchDatabase()
ONE = DB.server_spec("nexus-workers", workers=1)
TWO = DB.server_spec("nexus-workers", workers=2)
_KEYS = SeedOnce(f"{KEYS} API keys", seed_keys)


def seed(server: RunningServer) -> Workload:
    return _KEYS.get(server.database_url)


def scenarios() -> list[Any]:
    """Scenario and Target are imported here: client processes unpickle the workloads by
    importing bench.scenarios_apikeys, and bench.scenarios imports this module."""
    from bench.scenarios import Scenario, Target

    why = reachable(DB.server_url)
    if why:
        print(
            f"bench: workers rows left out: {why}; they need PostgreSQL (BENCH_POSTGRES_URL)",
            file=sys.stderr,
        )
        return []
    load = {"pin": False, "channels": CHANNELS}
    return [
        Scenario(
            "workers-1",
            "apikey-unary's VerifyApiKey, `nexus serve --workers 1` on PostgreSQL, clients unpinned",
            ONE,
            prepare=seed,
            load=load,
        ),
        Scenario(
            "workers-2",
            "the same with 2 worker processes sharing the port (SO_REUSEPORT)",
            TWO,
            prepare=seed,
            load=load,
            targets=(Target("throughput", ">=", 1.0, source="nexus serve --workers", versus="workers-1"),),
        ),
    ]
