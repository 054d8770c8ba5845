"""Parent side of the measured servers: what to start (ServerSpec) and a running handle."""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.procs import stop_process

ROOT = Path(__file__).resolve().parents[1]
_START_TIMEOUT = 60.0


class ServerFailed(RuntimeError):
    """The server process exited or never said READY; the message carries its log's tail."""


@dataclass(frozen=True)
class ServerSpec:
    """Which server a scenario measures.

    kind: a key of bench.runner.SERVERS ("echo" or "nexus").
    settings: nexus Settings fields to override (JSON values; seconds for timedeltas).
    env: extra environment for the server process.
    """

    kind: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)

    def key(self) -> str:
        return json.dumps([self.kind, dict(self.settings), dict(self.env)], sort_keys=True)


ECHO = ServerSpec("echo")
# The same bare server on uvloop, the loop Nexus runs on by default: for reading how much of
# Nexus's ratio to echo is the loop rather than Nexus's own work.
ECHO_UVLOOP = ServerSpec("echo", settings={"event_loop": "uvloop"})
NEXUS = ServerSpec("nexus")


@dataclass(frozen=True)
class RunningServer:
    spec: ServerSpec
    pid: int
    port: int
    workdir: Path
    log_path: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def database_url(self) -> str:
        """Nexus's database, for scenarios that seed data before the load starts."""
        url = self.spec.settings.get("database_url")
        return str(url) if url else f"sqlite+aiosqlite:///{self.workdir / 'nexus.db'}"

    def log_tail(self, lines: int = 30) -> str:
        return _tail(self.log_path, lines)


@contextmanager
def running(spec: ServerSpec, workdir: Path, cpus: str = "") -> Iterator[RunningServer]:
    """Start the server, wait for READY, yield it; stop it (and reap it) whatever happens."""
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "server.log"
    cmd = [sys.executable, "-m", "bench.runner", spec.kind, "--var-dir", str(workdir)]
    cmd += ["--settings", json.dumps(dict(spec.settings))]
    if cpus:
        cmd += ["--cpus", cpus]
    env = {**os.environ, **spec.env, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL
        )
    try:
        port = _await_ready(proc, log_path)
        yield RunningServer(spec, proc.pid, port, workdir, log_path)
        if proc.poll() is not None:
            raise ServerFailed(
                f"{spec.kind} server exited ({proc.returncode}) during the run:\n{_tail(log_path)}"
            )
    finally:
        stop_process(proc)
        if proc.stdout is not None:
            proc.stdout.close()


def _await_ready(proc: subprocess.Popen[bytes], log_path: Path) -> int:
    assert proc.stdout is not None
    deadline = time.monotonic() + _START_TIMEOUT
    buffer = b""
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while b"\n" not in buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ServerFailed(f"server gave no READY in {_START_TIMEOUT:.0f} s:\n{_tail(log_path)}")
            if selector.select(left):
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    proc.wait(5)
                    raise ServerFailed(f"server exited ({proc.returncode}) before READY:\n{_tail(log_path)}")
                buffer += chunk
    line = buffer.split(b"\n", 1)[0].decode()
    if not line.startswith("READY "):
        raise ServerFailed(f"unexpected first line from server: {line!r}\n{_tail(log_path)}")
    return int(line.split()[1])


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
