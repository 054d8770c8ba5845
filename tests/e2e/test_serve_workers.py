"""`nexus serve --workers N`: N processes share the port on PostgreSQL and the kernel spreads
connections over them; a stop signal stops them all; a worker that dies takes the set down
(non-zero exit, for the service manager to restart); the SQLite default refuses it."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from nexus_server.config import ROOT
from tests.e2e.conftest import (
    NEXUS,
    START_TIMEOUT,
    grpc_serving,
    http_get_text,
    nexus_env,
    stop_process,
    wait_for,
)

pytestmark = pytest.mark.e2e


def _started(metrics_port: int) -> float:
    text = http_get_text(metrics_port, "/metrics") or ""
    return sum(float(v) for v in re.findall(r"^nexus_grpc_server_started_total\{[^}]*\} (\S+)$", text, re.M))


def _workers(tmp_path: Path, url: str) -> tuple[subprocess.Popen[bytes], dict[str, str], Path]:
    env = nexus_env(tmp_path, NEXUS_DATABASE_URL=url)
    done = subprocess.run([NEXUS, "migrate"], env=env, cwd=ROOT, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [NEXUS, "serve", "--workers", "2"], env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
        )
    metrics = int(env["NEXUS_METRICS_PORT"])
    address = f"127.0.0.1:{env['NEXUS_PORT']}"

    def ready() -> bool:  # the port answers, and both workers serve their metrics
        up = [http_get_text(port, "/metrics") for port in (metrics, metrics + 1)]
        return grpc_serving(address) and all(up)

    wait_for("workers", ready, proc, log, START_TIMEOUT * 2)
    return proc, env, log


def test_two_workers_share_the_port_and_stop_together(tmp_path: Path, postgres: str) -> None:
    proc, env, log = _workers(tmp_path, postgres)
    try:
        address = f"127.0.0.1:{env['NEXUS_PORT']}"
        for _ in range(60):  # a connection each: the kernel picks a worker per connection
            with grpc.insecure_channel(address) as channel:
                health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        metrics = int(env["NEXUS_METRICS_PORT"])
        assert _started(metrics) > 0 and _started(metrics + 1) > 0, log.read_text()
    finally:
        code = stop_process(proc)
    assert code == 0, log.read_text()
    assert not grpc_serving(f"127.0.0.1:{env['NEXUS_PORT']}")


def test_a_worker_that_dies_takes_the_set_down(tmp_path: Path, postgres: str) -> None:
    proc, _, log = _workers(tmp_path, postgres)
    try:
        children = subprocess.run(
            ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        assert len(children) == 2
        subprocess.run(["kill", "-9", children[0]], check=True)
        proc.wait(timeout=40)
        assert proc.returncode == 1, log.read_text()
        time.sleep(0.2)
        assert subprocess.run(["kill", "-0", children[1]], capture_output=True, check=False).returncode != 0
    finally:
        stop_process(proc, signal.SIGKILL)


def test_the_sqlite_default_refuses_several_workers(tmp_path: Path) -> None:
    env = nexus_env(tmp_path)
    done = subprocess.run(
        [NEXUS, "serve", "--workers", "2"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "several workers need PostgreSQL" in done.stderr
