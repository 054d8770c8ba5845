"""`nexus events tail` prints a tenant's events as JSON lines and resumes from its cursor file."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path

import grpc
import pytest

from nexus.events.v1 import events_service_pb2 as pb
from nexus.events.v1 import events_service_pb2_grpc as rpc
from nexus_server.config import ROOT
from tests.e2e.conftest import NEXUS, LineReader, stop_process
from tests.support import event_keys, key_metadata

pytestmark = pytest.mark.e2e


async def _publish(address: str, key: str, subjects: list[str]) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = rpc.EventsServiceStub(channel)
        for subject in subjects:
            await stub.PublishEvent(
                pb.PublishEventRequest(type="deal.won", source="crm", subject=subject),
                metadata=key_metadata(key),
            )


def _tail(address: str, key: str, cursor: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    command = [NEXUS, "events", "tail", "--address", address, "--key", key, "--source", "crm"]
    return subprocess.Popen(
        [*command, "--after", "0", "--cursor-file", str(cursor)],
        env=env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )


def _wait_for_cursor(cursor: Path, sequence: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not cursor.exists() or int(cursor.read_text() or 0) < sequence:
        assert time.monotonic() < deadline, f"the cursor never reached {sequence}"
        time.sleep(0.02)


async def test_tail_prints_events_and_resumes_after_its_cursor(
    server_process: tuple[dict[str, str], int, Path], tmp_path: Path
) -> None:
    env, port, _ = server_process
    address = f"127.0.0.1:{port}"
    publisher, reader = await event_keys(f"sqlite+aiosqlite:///{Path(env['NEXUS_VAR_DIR']) / 'nexus.db'}")
    cursor = tmp_path / "cursor"
    await _publish(address, publisher, ["a", "b"])
    first = _tail(address, reader, cursor, env)
    try:
        lines = await asyncio.to_thread(LineReader(first).wait_for, '"subject": "b"')
        # Tail prints, then records its cursor (a kill in between repeats the event on
        # resume: at least once). Stop it only once the cursor has caught up.
        printed = int(json.loads(lines[-1])["sequence"])
        await asyncio.to_thread(_wait_for_cursor, cursor, printed)
    finally:
        stop_process(first)
    await _publish(address, publisher, ["c"])
    second = _tail(address, reader, cursor, env)
    try:
        more = await asyncio.to_thread(LineReader(second).wait_for, '"subject": "c"')
    finally:
        stop_process(second)
    assert [json.loads(line)["subject"] for line in lines] == ["a", "b"]
    assert [json.loads(line)["subject"] for line in more] == ["c"]
