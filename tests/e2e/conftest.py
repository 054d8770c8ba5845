"""Real processes for e2e tests: `nexus serve` and Envoy on free loopback ports.

One server and one Envoy are started per session (after `nexus migrate` into a temp var dir)
and always killed at teardown. Readiness is waited for with timeouts, and a process that dies
while starting fails the test with its log.
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from nexus_server.config import ROOT, Settings, load_settings
from nexus_server.gateway.envoy_config import DESCRIPTOR_PATH, envoy_command, render_envoy_config
from tests.conftest import POSTGRES_URL, _drop_postgres_database, _fresh_postgres_database

BIN = Path(sys.executable).parent
NEXUS = str(BIN / "nexus")
GRPCURL = str(BIN / "grpcurl")
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


def free_port() -> int:
    """A loopback port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# A real key, as production has (`nexus serve` refuses the built-in development one); one for
# the whole session, so replicas sharing a database unseal each other's signing keys.
SECRET_KEY = secrets.token_urlsafe(32)


def nexus_env(var_dir: Path, **overrides: int | str) -> dict[str, str]:
    """This process's environment without any NEXUS_* of the developer's shell, plus ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXUS_")}
    env.update(
        {
            "NEXUS_VAR_DIR": str(var_dir),
            "NEXUS_SECRET_KEY": SECRET_KEY,
            "NEXUS_PORT": str(free_port()),
            "NEXUS_METRICS_PORT": str(free_port()),
            "NEXUS_ENVOY_PORT": str(free_port()),
            "NEXUS_ENVOY_ADMIN_PORT": str(free_port()),
            "NEXUS_LOG_LEVEL": "INFO",
            # Every test registers from 127.0.0.1; the per-address limit is tested on its own.
            "NEXUS_SIGNUPS_PER_ADDRESS": "1000000",
        }
    )
    env.update({k: str(v) for k, v in overrides.items()})
    return env


def stop_process(proc: subprocess.Popen[bytes], sig: int | None = None) -> int:
    """Signal (SIGTERM by default), wait, SIGKILL if it lingers; always reaped, pipes closed."""
    try:
        if proc.poll() is None:
            if sig is None:
                proc.terminate()
            else:
                proc.send_signal(sig)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT)
    finally:
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    return proc.returncode


def wait_for(what: str, ready: object, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    """Call `ready()` until it is true; fail with the log if `proc` exits or time runs out."""
    assert callable(ready)
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode} while starting:\n{tail(log)}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what} was not ready within {timeout:.0f}s:\n{tail(log)}")
        time.sleep(0.1)


def tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else "(no log)"


def grpc_serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def http_get_text(port: int, path: str) -> str | None:
    """GET http://127.0.0.1:port/path → body text on 200, None otherwise (or if unreachable)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read().decode()
        return body if response.status == 200 else None
    except OSError:
        return None
    finally:
        conn.close()


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]  # lower-cased names
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


def http_request(
    port: int,
    method: str,
    path: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    source: str | None = None,
) -> Response:
    """One HTTP/1.1 request on a fresh connection (closed after), so nothing leaks; `source`
    binds the client's end to that loopback address (127.0.0.2, …) to be another client."""
    conn = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=10, source_address=(source, 0) if source else None
    )
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        response = conn.getresponse()
        data = response.read()
        return Response(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
    finally:
        conn.close()


def run_grpcurl(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GRPCURL, *args], capture_output=True, text=True, timeout=timeout, check=False)


@dataclass
class Stack:
    """A running server and the Envoy in front of it."""

    settings: Settings
    grpc_port: int
    config_path: Path
    server_log: Path
    envoy_log: Path
    access_log: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def http_port(self) -> int:
        return self.settings.envoy_port

    @property
    def admin_port(self) -> int:
        return self.settings.envoy_admin_port

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def envoy_address(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        source: str | None = None,
    ) -> Response:
        """An HTTP/1.1 request through Envoy's public listener (from `source`, if given)."""
        return http_request(self.http_port, method, path, headers=headers, body=body, source=source)

    def json(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        token: str = "",
        tenant: str = "",
        headers: Mapping[str, str] | None = None,
        source: str | None = None,
    ) -> tuple[Response, dict[str, Any]]:
        """A JSON call through Envoy as a web client makes it: the response and its parsed body."""
        sent = {"content-type": "application/json", **(headers or {})}
        if token:
            sent["authorization"] = f"Bearer {token}"
        if tenant:
            sent["x-tenant-id"] = tenant
        payload = json.dumps(body).encode() if body is not None else None
        response = self.request(method, path, headers=sent, body=payload, source=source)
        return response, json.loads(response.text or "{}")


@pytest.fixture(scope="session")
def e2e_var_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e-var")


@pytest.fixture(scope="session")
def server_process(e2e_var_dir: Path) -> Iterator[tuple[dict[str, str], int, Path]]:
    """`nexus migrate` then `nexus serve` on a free port; yields (env, grpc port, log path)."""
    env = nexus_env(e2e_var_dir)
    log = e2e_var_dir / "server.log"
    migrate = subprocess.run(
        [NEXUS, "migrate"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert migrate.returncode == 0, f"nexus migrate failed:\n{migrate.stderr}"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [NEXUS, "serve"],
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    port = int(env["NEXUS_PORT"])
    try:
        wait_for("nexus serve", lambda: grpc_serving(f"127.0.0.1:{port}"), proc, log, START_TIMEOUT)
        yield env, port, log
    finally:
        stop_process(proc)


@pytest.fixture(scope="session")
def rendered_config(
    server_process: tuple[dict[str, str], int, Path], e2e_var_dir: Path
) -> tuple[Settings, Path]:
    """deploy/envoy/envoy.yaml filled for this session's ports, written to the var dir."""
    env, grpc_port, _ = server_process
    settings = load_settings(env)
    path = e2e_var_dir / "envoy.yaml"
    path.write_text(render_envoy_config(settings, upstream_port=grpc_port, descriptor_path=DESCRIPTOR_PATH))
    return settings, path


@pytest.fixture(scope="session")
def stack(
    server_process: tuple[dict[str, str], int, Path],
    rendered_config: tuple[Settings, Path],
    e2e_var_dir: Path,
) -> Iterator[Stack]:
    """Envoy (rendered config) in front of the session's server, ready (admin /ready is LIVE)."""
    env, grpc_port, server_log = server_process
    settings, config_path = rendered_config
    envoy_log = e2e_var_dir / "envoy.log"
    access_log = e2e_var_dir / "envoy-access.log"
    with envoy_log.open("wb") as err, access_log.open("wb") as out:
        proc = subprocess.Popen(
            envoy_command(config_path, log_level="info"), stdin=subprocess.DEVNULL, stdout=out, stderr=err
        )
    try:
        wait_for(
            "envoy",
            lambda: http_get_text(settings.envoy_admin_port, "/ready") == "LIVE\n",
            proc,
            envoy_log,
            START_TIMEOUT,
        )
        yield Stack(settings, grpc_port, config_path, server_log, envoy_log, access_log, env)
    finally:
        stop_process(proc)


class LineReader:
    """Lines of a child's stdout on a thread, so a test can wait for one with a timeout."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self._stream = proc.stdout
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        for raw in iter(self._stream.readline, b""):
            self._lines.put(raw.decode(errors="replace"))
        self._lines.put(None)

    def wait_for(self, marker: str, timeout: float = START_TIMEOUT) -> list[str]:
        """Lines read up to and including the first containing `marker`; fail on EOF/timeout."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no line with {marker!r} within {timeout:.0f}s; got:\n{''.join(self.seen)}")
            if line is None:
                pytest.fail(f"stdout closed before a line with {marker!r}; got:\n{''.join(self.seen)}")
            self.seen.append(line)
            if marker in line:
                return self.seen

    def join(self, timeout: float = STOP_TIMEOUT) -> None:
        self._thread.join(timeout)


@contextmanager
def replicas_on(
    url: str, tmp: pytest.TempPathFactory, count: int, **overrides: int | str
) -> Iterator[list[str]]:
    """`count` `nexus serve` processes sharing the database at `url` (migrated by the first);
    yields their gRPC addresses once all are serving, and stops every one at exit."""
    procs: list[subprocess.Popen[bytes]] = []
    addresses: list[str] = []
    try:
        for index in range(count):
            var_dir = tmp.mktemp(f"replica{index}")
            env = nexus_env(var_dir, NEXUS_DATABASE_URL=url, NEXUS_METRICS_PORT="off", **overrides)
            if index == 0:
                migrate = subprocess.run(
                    [NEXUS, "migrate"],
                    env=env,
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=False,
                )
                assert migrate.returncode == 0, f"nexus migrate failed:\n{migrate.stderr}"
            log = var_dir / "server.log"
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    [NEXUS, "serve"],
                    env=env,
                    cwd=ROOT,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            procs.append(proc)
            address = f"127.0.0.1:{env['NEXUS_PORT']}"
            wait_for(f"replica {index}", lambda a=address: grpc_serving(a), proc, log, START_TIMEOUT)
            addresses.append(address)
        yield addresses
    finally:
        for proc in procs:
            stop_process(proc)


@contextmanager
def running_stack(var_dir: Path, **overrides: int | str) -> Iterator[Stack]:
    """A stack of its own (migrate, `nexus serve`, Envoy) for a test that needs other settings
    than the session's; both processes are stopped at exit."""
    env = nexus_env(var_dir, NEXUS_METRICS_PORT="off", **overrides)
    migrate = subprocess.run(
        [NEXUS, "migrate"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert migrate.returncode == 0, f"nexus migrate failed:\n{migrate.stderr}"
    settings = load_settings(env)
    server_log, envoy_log, access_log = var_dir / "server.log", var_dir / "envoy.log", var_dir / "access.log"
    with server_log.open("wb") as out:
        server = subprocess.Popen(
            [NEXUS, "serve"],
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    envoy: subprocess.Popen[bytes] | None = None
    try:
        port = settings.port
        wait_for("nexus serve", lambda: grpc_serving(f"127.0.0.1:{port}"), server, server_log, START_TIMEOUT)
        config_path = var_dir / "envoy.yaml"
        config_path.write_text(
            render_envoy_config(settings, upstream_port=port, descriptor_path=DESCRIPTOR_PATH)
        )
        with envoy_log.open("wb") as err, access_log.open("wb") as out:
            envoy = subprocess.Popen(
                envoy_command(config_path, log_level="info"), stdin=subprocess.DEVNULL, stdout=out, stderr=err
            )
        wait_for(
            "envoy",
            lambda: http_get_text(settings.envoy_admin_port, "/ready") == "LIVE\n",
            envoy,
            envoy_log,
            START_TIMEOUT,
        )
        yield Stack(settings, port, config_path, server_log, envoy_log, access_log, env)
    finally:
        if envoy is not None:
            stop_process(envoy)
        stop_process(server)


@pytest.fixture
def postgres() -> Iterator[str]:
    """A fresh PostgreSQL database for processes a test starts (skipped when none is configured)."""
    if not POSTGRES_URL:
        pytest.skip("NEXUS_TEST_POSTGRES_URL is not set")
    url, name = _fresh_postgres_database(POSTGRES_URL)
    yield url
    _drop_postgres_database(POSTGRES_URL, name)
