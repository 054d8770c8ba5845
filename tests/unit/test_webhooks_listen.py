"""`nexus webhooks listen`: verified deliveries are printed and answered 204, forged or stale
ones 400; a rotation's second secret still verifies; --forward-to passes the request on
unchanged and relays the answer; connections stay open between requests; and the command
itself prints an event and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx
import pytest

from nexus_server import cli
from nexus_server.cli import webhooks
from nexus_server.cli.webhooks import Listener
from nexus_server.events.webhooks import signing

EVENT: dict[str, Any] = {
    "id": "evt_1",
    "tenant_id": "ten_1",
    "sequence": "3",
    "type": "deal.won",
    "source": "nexus-sales",
    "time": "2026-01-01T00:00:00Z",
    "data": {"amount": 5},
}
BODY = json.dumps(EVENT).encode()
LINE = "2026-01-01T00:00:00Z deal.won evt_1 seq=3\n"


def free_port() -> int:
    # Not tests.support's: that module brings the whole server along, and this needs none of it.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _signed(
    secrets: list[str], body: bytes = BODY, message_id: str = "evt_1", at: int | None = None
) -> dict[str, str]:
    return signing.sign(message_id, int(time.time()) if at is None else at, body, secrets)


@asynccontextmanager
async def _listening(
    secrets: list[str], **options: Any
) -> AsyncIterator[tuple[Listener, io.StringIO, io.StringIO]]:
    out, err = io.StringIO(), io.StringIO()
    listener = Listener(secrets, out=out, err=err, **options)
    async with listener:
        yield listener, out, err


async def test_a_signed_event_is_answered_204_and_printed_as_one_line() -> None:
    secret = signing.new_secret()
    async with _listening([secret]) as (listener, out, err), httpx.AsyncClient() as client:
        response = await client.post(listener.url, content=BODY, headers=_signed([secret]))
    assert response.status_code == 204
    assert out.getvalue() == LINE
    assert err.getvalue() == ""


async def test_with_json_the_event_itself_is_the_line() -> None:
    secret = signing.new_secret()
    pretty = json.dumps(EVENT, indent=2).encode()  # several lines in the body, one printed
    async with _listening([secret], json_lines=True) as (listener, out, _), httpx.AsyncClient() as client:
        response = await client.post(listener.url, content=pretty, headers=_signed([secret], pretty))
    assert response.status_code == 204
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0]) == EVENT


async def test_a_tampered_body_is_refused_400_and_not_printed() -> None:
    secret = signing.new_secret()
    tampered = BODY.replace(b'"amount": 5', b'"amount": 500')
    assert tampered != BODY
    async with _listening([secret]) as (listener, out, err), httpx.AsyncClient() as client:
        response = await client.post(listener.url, content=tampered, headers=_signed([secret]))
    assert response.status_code == 400
    assert "no signature matches" in response.text
    assert out.getvalue() == ""
    assert "refused evt_1" in err.getvalue()
    assert secret not in err.getvalue() and secret not in response.text


async def test_a_stale_timestamp_is_refused_400() -> None:
    secret = signing.new_secret()
    stale = _signed([secret], at=int(time.time()) - 3600)
    async with _listening([secret]) as (listener, out, err), httpx.AsyncClient() as client:
        response = await client.post(listener.url, content=BODY, headers=stale)
    assert response.status_code == 400
    assert "too far from now" in response.text
    assert out.getvalue() == ""
    assert "too far from now" in err.getvalue()


async def test_during_a_rotation_a_request_signed_by_the_second_secret_only_is_accepted() -> None:
    previous, current = signing.new_secret(), signing.new_secret()
    async with _listening([previous, current]) as (listener, out, _), httpx.AsyncClient() as client:
        response = await client.post(listener.url, content=BODY, headers=_signed([current]))
        foreign = await client.post(listener.url, content=BODY, headers=_signed([signing.new_secret()]))
    assert response.status_code == 204
    assert foreign.status_code == 400
    assert out.getvalue() == LINE


async def test_a_verified_body_that_is_not_json_is_still_accepted_and_its_id_printed() -> None:
    secret = signing.new_secret()
    body = b"\x00not json"
    async with _listening([secret]) as (listener, out, _), httpx.AsyncClient() as client:
        response = await client.post(listener.url, content=body, headers=_signed([secret], body, "evt_raw"))
    assert response.status_code == 204
    assert "evt_raw" in out.getvalue()
    assert len(out.getvalue().splitlines()) == 1


async def test_other_methods_paths_and_oversized_bodies_are_refused() -> None:
    secret = signing.new_secret()
    async with _listening([secret], path="/hooks") as (listener, out, _), httpx.AsyncClient() as client:
        assert listener.url.endswith("/hooks")
        got = await client.get(listener.url)
        elsewhere = await client.post(
            listener.url.removesuffix("/hooks") + "/", content=BODY, headers=_signed([secret])
        )
        big = b"x" * (webhooks.MAX_BODY + 1)
        oversized = await client.post(listener.url, content=big, headers=_signed([secret], big))
    assert (got.status_code, got.headers["allow"]) == (405, "POST")
    assert elsewhere.status_code == 404
    assert oversized.status_code == 413
    assert out.getvalue() == ""


async def test_one_connection_carries_several_requests_and_stop_ends_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = signing.new_secret()
    reader, writer = None, None
    try:
        async with _listening([secret]) as (listener, out, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
            for message_id in ("evt_1", "evt_2"):
                headers = _signed([secret], message_id=message_id)
                head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
                writer.write(
                    f"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: {len(BODY)}\r\n{head}\r\n".encode() + BODY
                )
                await writer.drain()
                status = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                assert status.startswith(b"HTTP/1.1 204 "), status
                assert b"connection: close" not in status.lower()
        # The connection was still open and idle when the listener stopped: it is closed,
        # quietly (asyncio logs a connection task that ends badly).
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert out.getvalue() == LINE * 2
        assert not [r for r in caplog.records if r.name == "asyncio"]
    finally:
        if writer is not None:
            writer.close()
            await writer.wait_closed()


async def test_forward_to_passes_the_request_on_unchanged_and_answers_with_its_status() -> None:
    secret = signing.new_secret()
    # The second receiver checks the signature again: it passes only if body and headers
    # arrived as Nexus sent them.
    async with _listening([secret], json_lines=True) as (app, app_out, _):
        async with (
            _listening([secret], forward_to=app.url) as (listener, out, err),
            httpx.AsyncClient() as client,
        ):
            response = await client.post(listener.url, content=BODY, headers=_signed([secret]))
        assert response.status_code == 204
        assert out.getvalue() == LINE
        assert json.loads(app_out.getvalue()) == EVENT
        assert "forwarded, 204" in err.getvalue()

    # An app that refuses: its status and reason come back to the sender.
    async with _listening([signing.new_secret()], path="/app") as (app, app_out, _):
        async with (
            _listening([secret], forward_to=app.url) as (listener, out, _),
            httpx.AsyncClient() as client,
        ):
            refused = await client.post(listener.url, content=BODY, headers=_signed([secret]))
        assert refused.status_code == 400
        assert "no signature matches" in refused.text
        assert out.getvalue() == LINE and app_out.getvalue() == ""


async def test_an_unreachable_forward_to_answers_502() -> None:
    secret = signing.new_secret()
    closed = f"http://127.0.0.1:{free_port()}/"
    async with _listening([secret], forward_to=closed) as (listener, out, err), httpx.AsyncClient() as client:
        response = await client.post(listener.url, content=BODY, headers=_signed([secret]))
    assert response.status_code == 502
    assert out.getvalue() == LINE  # verified, so shown, even though the app did not take it
    assert "--forward-to failed" in err.getvalue()


def test_a_listener_refuses_a_malformed_secret() -> None:
    with pytest.raises(ValueError, match="whsec_"):
        Listener(["not-a-secret"])
    with pytest.raises(ValueError):
        Listener([])


@contextmanager
def _process_state_kept() -> Iterator[None]:
    # cli.main configures the root logger and the umask as a process should; put both back.
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    umask = os.umask(0o022)
    os.umask(umask)
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        os.umask(umask)


def test_the_command_exits_2_without_a_valid_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(webhooks.SECRET_ENV, raising=False)
    with _process_state_kept():
        assert cli.main(["webhooks", "listen"]) == 2
        assert "--secret" in capsys.readouterr().err
        wrong = "whsec_" + "%" * 40
        monkeypatch.setenv(webhooks.SECRET_ENV, f"{signing.new_secret()},{wrong}")
        assert cli.main(["webhooks", "listen"]) == 2
    err = capsys.readouterr().err
    assert "secret #2" in err and wrong not in err


async def test_the_command_prints_a_delivery_and_stops_cleanly_on_sigterm() -> None:
    secret, port = signing.new_secret(), free_port()
    env = {name: value for name, value in os.environ.items() if name != webhooks.SECRET_ENV}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "nexus_server.cli",
        "webhooks",
        "listen",
        "--port",
        str(port),
        "--secret",
        secret,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert process.stdout is not None and process.stderr is not None
    try:
        banner = (await asyncio.wait_for(process.stderr.readline(), 30)).decode()
        url = f"http://127.0.0.1:{port}/"
        assert url in banner and "NEXUS_WEBHOOKS_ALLOW_PRIVATE_URLS=true" in banner
        async with httpx.AsyncClient() as client:
            response = await client.post(url, content=BODY, headers=_signed([secret]))
        assert response.status_code == 204
        assert (await asyncio.wait_for(process.stdout.readline(), 10)).decode() == LINE
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0
        assert secret not in banner + (await process.stderr.read()).decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
