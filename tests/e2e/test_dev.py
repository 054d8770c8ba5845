"""`nexus dev` (what `make run` starts): server + Envoy up, banner, clean stop, Envoy failures."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from nexus_server.config import ROOT

from .conftest import NEXUS, LineReader, http_request, nexus_env, port_is_open, stop_process

pytestmark = pytest.mark.e2e

READY_MARKER = "Ctrl-C stops both."
Dev = tuple[subprocess.Popen[bytes], LineReader, Path]


@pytest.fixture
def dev_env(tmp_path: Path) -> dict[str, str]:
    """A migrated var dir and free ports for one `nexus dev` run."""
    env = nexus_env(tmp_path)
    del env["NEXUS_SECRET_KEY"]  # as `make run` has it: the built-in development key
    migrate = subprocess.run(
        [NEXUS, "migrate"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert migrate.returncode == 0, migrate.stderr
    return env


@pytest.fixture
def dev(dev_env: dict[str, str], tmp_path: Path) -> Iterator[Dev]:
    """`nexus dev` as a child (stdout piped for the banner, stderr to a file); always stopped."""
    err = tmp_path / "dev.stderr"
    with err.open("wb") as stderr:
        proc = subprocess.Popen(
            [NEXUS, "dev"],
            env=dev_env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    reader = LineReader(proc)
    try:
        yield proc, reader, err
    finally:
        stop_process(proc)
        reader.join()


def _ports(env: dict[str, str]) -> tuple[int, int, int]:
    return int(env["NEXUS_PORT"]), int(env["NEXUS_ENVOY_PORT"]), int(env["NEXUS_ENVOY_ADMIN_PORT"])


def test_dev_prints_addresses_and_examples_then_serves_json(dev: Dev, dev_env: dict[str, str]) -> None:
    _, reader, _ = dev
    grpc_port, http_port, _ = _ports(dev_env)
    banner = "".join(reader.wait_for(READY_MARKER))
    assert f"127.0.0.1:{grpc_port}" in banner
    assert f"http://127.0.0.1:{http_port}" in banner
    assert f"curl -s http://127.0.0.1:{http_port}/v1/plans" in banner
    assert f"grpcurl -plaintext 127.0.0.1:{grpc_port} list" in banner
    response = http_request(http_port, "GET", "/v1/plans")  # the banner's curl example
    assert response.status in (200, 501), response.text  # plans, or not built yet
    assert response.content_type == "application/json"
    json.loads(response.body)


def test_dev_warns_of_the_development_key_and_keeps_var_owner_only(dev: Dev, dev_env: dict[str, str]) -> None:
    _, reader, err = dev
    reader.wait_for(READY_MARKER)
    assert "DEVELOPMENT SECRET KEY" in err.read_text()
    var = Path(dev_env["NEXUS_VAR_DIR"])
    for name in ("nexus.db", "envoy.yaml"):
        assert stat.S_IMODE((var / name).stat().st_mode) == 0o600, name


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_dev_stops_envoy_and_server_on_signal(dev: Dev, dev_env: dict[str, str], sig: signal.Signals) -> None:
    proc, reader, err = dev
    reader.wait_for(READY_MARKER)
    grpc_port, http_port, admin_port = _ports(dev_env)
    assert port_is_open(http_port) and port_is_open(grpc_port)
    code = stop_process(proc, sig)
    assert code == 0, err.read_text()
    reader.join()  # stdout closes only once Envoy (which shares it) has exited too
    assert not any(port_is_open(p) for p in (grpc_port, http_port, admin_port))
    assert '"message": "stopped"' in err.read_text()


def test_dev_ctrl_c_in_a_terminal_stops_cleanly(dev_env: dict[str, str], tmp_path: Path) -> None:
    """Ctrl-C reaches the whole foreground process group, Envoy included: still a clean stop
    (exit 0), not "Envoy died"."""
    err = tmp_path / "dev.stderr"
    with err.open("wb") as stderr:
        proc = subprocess.Popen(
            [NEXUS, "dev"],
            env=dev_env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            start_new_session=True,  # its own process group, as a shell gives a foreground job
        )
    reader = LineReader(proc)
    try:
        reader.wait_for(READY_MARKER)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(20) == 0, err.read_text()
        assert "envoy exited unexpectedly" not in err.read_text()
    finally:
        stop_process(proc)
        reader.join()


def test_dev_exits_nonzero_when_envoy_dies(dev: Dev, dev_env: dict[str, str]) -> None:
    proc, reader, err = dev
    reader.wait_for(READY_MARKER)
    grpc_port, _, admin_port = _ports(dev_env)
    http_request(admin_port, "POST", "/quitquitquit")  # Envoy exits on its own
    assert proc.wait(20) == 1
    stderr = err.read_text()
    assert "nexus dev: envoy exited unexpectedly with code 0; stopping the server" in stderr
    assert "Envoy's last stderr lines:" in stderr
    assert not port_is_open(grpc_port)


def test_dev_reports_envoy_stderr_when_envoy_cannot_start(dev_env: dict[str, str], tmp_path: Path) -> None:
    """Envoy's listener port is taken: Envoy exits while starting, `nexus dev` says why."""
    grpc_port, http_port, _ = _ports(dev_env)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", http_port))
        squatter.listen()
        result = subprocess.run(
            [NEXUS, "dev"], env=dev_env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
        )
    assert result.returncode == 1, result.stderr
    assert "envoy exited with code" in result.stderr
    assert f"127.0.0.1:{http_port}" in result.stderr
    assert "Address already in use" in result.stderr
    assert not port_is_open(grpc_port)
