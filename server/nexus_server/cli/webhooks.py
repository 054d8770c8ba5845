"""`nexus webhooks listen`: a local receiver for Nexus's outbound webhooks, like `stripe listen`.

A developer points a webhook endpoint (CreateWebhookEndpoint) at it and sees each delivery
as it arrives: the request's Standard Webhooks signature is checked with the endpoint's
signing secrets (events/webhooks/signing.py, the check a real receiver makes), and each
verified event is printed as one line, `<time> <type> <id> seq=<sequence>` or with `--json`
the event itself. With `--forward-to` the verified request goes on, body and headers as
received, to the developer's own app, and its answer is Nexus's answer: the app need not be
reachable by Nexus, and a 5xx from it is retried like any other.

Answers: 204 once verified (or the forwarded app's status), 400 for a bad signature or a
stale timestamp (with the reason; a warning on stderr, which never shows a secret), 404 off
`--path`, 405 for anything but POST, 413 for a body over 1 MiB, 502 when `--forward-to`
cannot be reached. No web framework is installed, so it serves HTTP/1.1 with asyncio and h11
(httpx's own HTTP/1.1 parser), keeping connections alive since Nexus reuses them. `Listener`
starts and stops in-process (port 0 picks a free port) for tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import signal
import sys
import time
import unicodedata
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TextIO

import h11
import httpx

from nexus_server.common.text import HIDDEN_CATEGORIES
from nexus_server.config import Settings
from nexus_server.events.webhooks import signing

MAX_BODY = 1024 * 1024
FORWARD_TIMEOUT = 30.0  # seconds the --forward-to app gets to answer
SECRET_ENV = "NEXUS_WEBHOOK_SECRET"
_CHUNK = 65536
_SHOWN = 200  # characters of a header or field shown in a line, at most
# Not passed on to --forward-to: they describe this hop, and httpx sets its own.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "expect",
        "host",
        "content-length",
    }
)
# Passed back from --forward-to besides the status and body (Nexus honours Retry-After).
_RELAYED = ("content-type", "retry-after")

Headers = list[tuple[str, str]]


def add_arguments(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    webhooks = sub.add_parser("webhooks", help="outbound webhooks").add_subparsers(
        dest="webhooks_command", required=True
    )
    listen = webhooks.add_parser(
        "listen",
        help="receive webhooks locally, verify their signatures and print the events",
        description="Receive Nexus's webhooks on a local port, verify each signature with the "
        "endpoint's secrets and print each event: `<time> <type> <id> seq=<sequence>` a line, "
        "or its JSON with --json.",
    )
    listen.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    listen.add_argument("--port", type=_port, default=9000, help="port (default: 9000; 0 picks a free one)")
    listen.add_argument("--path", type=_path, default="/", help="request path to accept (default: /)")
    listen.add_argument(
        "--secret",
        action="append",
        default=[],
        metavar="WHSEC",
        help=f"the endpoint's signing secret whsec_… (repeatable, for a rotation; or {SECRET_ENV}, "
        "comma-separated)",
    )
    listen.add_argument(
        "--forward-to",
        metavar="URL",
        help="pass each verified request on to this URL; answer with its status",
    )
    listen.add_argument("--json", action="store_true", help="print each event as one line of JSON")
    listen.add_argument(
        "--tolerance",
        type=int,
        default=signing.TOLERANCE_SECONDS,
        help=f"seconds webhook-timestamp may be off (default: {signing.TOLERANCE_SECONDS})",
    )
    listen.set_defaults(fn=cmd_webhooks_listen)


def cmd_webhooks_listen(settings: Settings, args: argparse.Namespace) -> int:
    secrets = list(args.secret) or os.environ.get(SECRET_ENV, "").split(",")
    secrets = [s.strip() for s in secrets if s.strip()]
    if not secrets:
        print(
            f"nexus webhooks listen: give the endpoint's signing secret: --secret whsec_… or {SECRET_ENV}",
            file=sys.stderr,
        )
        return 2
    for number, secret in enumerate(secrets, 1):
        try:
            signing.secret_key(secret)
        except ValueError as error:  # its message never holds the secret
            print(f"nexus webhooks listen: secret #{number}: {error}", file=sys.stderr)
            return 2
    if args.forward_to is not None and not _is_http_url(args.forward_to):
        print("nexus webhooks listen: --forward-to takes an http:// or https:// URL", file=sys.stderr)
        return 2
    if args.tolerance < 0:
        print("nexus webhooks listen: --tolerance is zero or more seconds", file=sys.stderr)
        return 2
    listener = Listener(
        secrets,
        host=args.host,
        port=args.port,
        path=args.path,
        forward_to=args.forward_to,
        json_lines=args.json,
        tolerance=args.tolerance,
    )
    try:
        return asyncio.run(_listen_until_stopped(listener))
    except KeyboardInterrupt:  # a Ctrl-C before the signal handlers were in place
        return 0


class Listener:
    """The receiver: `await start()`, then `url` (with the bound port) until `await stop()`.
    Lines go to `out` (default stdout), warnings to `err` (default stderr)."""

    def __init__(
        self,
        secrets: Sequence[str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        path: str = "/",
        forward_to: str | None = None,
        json_lines: bool = False,
        tolerance: int = signing.TOLERANCE_SECONDS,
        out: TextIO | None = None,
        err: TextIO | None = None,
    ) -> None:
        if not secrets:
            raise ValueError("at least one signing secret is needed")
        for secret in secrets:
            signing.secret_key(secret)  # a malformed one fails here, not on the first request
        if _path_error(path):
            raise ValueError(_path_error(path))
        self.host, self.path = host, path
        self._secrets = list(secrets)
        self._requested_port = port
        self._forward_to = forward_to
        self._json = json_lines
        self._tolerance = tolerance
        self._out = out if out is not None else sys.stdout
        self._err = err if err is not None else sys.stderr
        self._server: asyncio.Server | None = None
        self._client: httpx.AsyncClient | None = None
        self._connections: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        if self._forward_to is not None:
            self._client = httpx.AsyncClient(timeout=FORWARD_TIMEOUT, follow_redirects=False)
        try:
            self._server = await asyncio.start_server(self._connection, self.host, self._requested_port)
        except BaseException:
            await self._close_client()
            raise

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the listener is not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        """What to give CreateWebhookEndpoint."""
        host = self.host
        with contextlib.suppress(ValueError):
            address = ipaddress.ip_address(host)
            if address.is_unspecified:
                address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
            host = f"[{address}]" if address.version == 6 else str(address)
        return f"http://{host}:{self.port}{self.path}"

    @property
    def is_private(self) -> bool:
        """Whether Nexus must be allowed private webhook URLs to reach it."""
        if self.host == "localhost" or self.host.endswith(".localhost"):
            return True
        try:
            address = ipaddress.ip_address(self.host)
        except ValueError:
            return False  # a name: whatever it resolves to is for the server to judge
        return not address.is_global

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            # Idle keep-alive connections would hold the server open: end them.
            for task in list(self._connections):
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            await server.wait_closed()
        await self._close_client()

    async def __aenter__(self) -> Listener:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.stop()

    async def _close_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    # --- HTTP/1.1 over one connection ----------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        conn = h11.Connection(h11.SERVER)
        try:
            while await self._exchange(conn, reader, writer):
                conn.start_next_cycle()
        except h11.RemoteProtocolError as error:
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                with contextlib.suppress(h11.LocalProtocolError, ConnectionError):
                    await self._send(
                        conn, writer, error.error_status_hint, b"malformed HTTP request\n", close=True
                    )
        except (ConnectionError, h11.LocalProtocolError):
            pass  # the peer went away mid-exchange; nothing to answer
        except asyncio.CancelledError:
            # stop() ends the connection. Returning, not re-raising: asyncio 3.11's streams
            # log a cancelled connection task as an unhandled exception.
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()
            if task is not None:
                self._connections.discard(task)

    async def _exchange(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """One request and its answer; whether the connection stays open for another."""
        event = await _next_event(conn, reader)
        if not isinstance(event, h11.Request):
            return False  # closed (between requests, the normal end of a keep-alive connection)
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in event.headers}
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_BODY:
            # Answered unread, so the connection cannot carry another request.
            await self._send(conn, writer, 413, b"body over 1 MiB\n", close=True)
            return False
        if conn.client_is_waiting_for_100_continue:
            writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
        body = await _read_body(conn, reader)
        if body is None:
            await self._send(conn, writer, 413, b"body over 1 MiB\n", close=True)
            return False
        forwarded = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in event.headers]
        target = event.target.decode("latin-1").split("?", 1)[0]
        status, reply, extra = await self._answer(event.method, target, headers, forwarded, body)
        if event.method == b"HEAD":
            reply = b""  # h11 holds an answer to HEAD to no body
        await self._send(conn, writer, status, reply, extra=extra)
        return conn.our_state is h11.DONE and conn.their_state is h11.DONE

    async def _send(
        self,
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        *,
        extra: Sequence[tuple[str, str]] = (),
        close: bool = False,
    ) -> None:
        headers: Headers = list(extra)
        if status not in (204, 304):
            headers.append(("content-length", str(len(body))))
        if close:
            headers.append(("connection", "close"))
        writer.write(conn.send(h11.Response(status_code=status, headers=headers)))
        if body and status not in (204, 304):
            writer.write(conn.send(h11.Data(data=body)))
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()

    # --- What a request gets ---------------------------------------------------------------

    async def _answer(
        self, method: bytes, target: str, headers: Mapping[str, str], forwarded: Headers, body: bytes
    ) -> tuple[int, bytes, Headers]:
        if target != self.path:
            return 404, f"not here: webhooks are taken at {self.path}\n".encode(), []
        if method != b"POST":
            return 405, b"webhooks are POSTed\n", [("allow", "POST")]
        try:
            message_id = signing.verify(
                headers, body, self._secrets, now=int(time.time()), tolerance=self._tolerance
            )
        except signing.SignatureInvalid as error:
            self._warn(f"refused {_shown(headers.get('webhook-id', '') or '-')}: {error}")
            return 400, f"{error}\n".encode(), []
        self._print(message_id, headers, body)
        if self._client is None or self._forward_to is None:
            return 204, b"", []
        return await self._forward(message_id, forwarded, body)

    def _print(self, message_id: str, headers: Mapping[str, str], body: bytes) -> None:
        event = _json_object(body)
        if event is None:
            delivered = _iso(int(headers["webhook-timestamp"]))
            if self._json:
                line = json.dumps({"webhook_id": message_id, "not_json": True, "bytes": len(body)})
            else:
                line = f"{delivered} - {_shown(message_id)} (not JSON, {len(body)} bytes)"
            self._warn(f"{_shown(message_id)}: the body is not a JSON object")
        elif self._json:
            line = json.dumps(event, separators=(",", ":"))  # ASCII: nothing can steer the terminal
        else:
            when = event.get("time") or _iso(int(headers["webhook-timestamp"]))
            sequence = event.get("sequence", "-")
            line = (
                f"{_shown(when)} {_shown(event.get('type', '-'))} {_shown(event.get('id') or message_id)}"
                f" seq={_shown(sequence)}"
            )
        self._out.write(line + "\n")
        self._out.flush()

    async def _forward(self, message_id: str, headers: Headers, body: bytes) -> tuple[int, bytes, Headers]:
        assert self._client is not None and self._forward_to is not None
        passed = [(name, value) for name, value in headers if name.lower() not in _HOP_BY_HOP]
        try:
            response = await self._client.post(self._forward_to, content=body, headers=passed)
        except httpx.HTTPError as error:
            reason = f"--forward-to failed: {type(error).__name__}"
            self._warn(f"{_shown(message_id)}: {reason}")
            return 502, f"{reason}\n".encode(), []
        self._warn(f"{_shown(message_id)}: forwarded, {response.status_code}")
        relayed = [(name, response.headers[name]) for name in _RELAYED if name in response.headers]
        return response.status_code, response.content, relayed

    def _warn(self, message: str) -> None:
        self._err.write(f"nexus webhooks listen: {message}\n")
        self._err.flush()


async def _next_event(conn: h11.Connection, reader: asyncio.StreamReader) -> Any:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(await reader.read(_CHUNK))  # b"" at the end tells h11 it closed


async def _read_body(conn: h11.Connection, reader: asyncio.StreamReader) -> bytes | None:
    """The request's body, or None once it passes MAX_BODY (chunked bodies say no length)."""
    parts: list[bytes] = []
    size = 0
    while True:
        event = await _next_event(conn, reader)
        if isinstance(event, h11.Data):
            size += len(event.data)
            if size > MAX_BODY:
                return None
            parts.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            return b"".join(parts)
        else:
            raise h11.RemoteProtocolError("the request ended early")


async def _listen_until_stopped(listener: Listener) -> int:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, stopping.set)
    try:
        try:
            await listener.start()
        except OSError as error:
            print(f"nexus webhooks listen: cannot listen on {listener.host}: {error}", file=sys.stderr)
            return 1
        note = ""
        if listener.is_private:
            note = (
                " (a loopback or private URL: the server must run with"
                " NEXUS_WEBHOOKS_ALLOW_PRIVATE_URLS=true, as `nexus dev` and `make run` do)"
            )
        print(
            f"nexus webhooks listen: listening on {listener.host} port {listener.port};"
            f" give CreateWebhookEndpoint the URL {listener.url}{note}. Ctrl-C stops.",
            file=sys.stderr,
            flush=True,
        )
        await stopping.wait()
        return 0
    finally:
        await listener.stop()
        for number in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(number)


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    return value if isinstance(value, dict) else None


def _iso(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _shown(value: object) -> str:
    """`value` as one terminal-safe word: controls and invisible characters escaped, spaces
    too (they would shift the columns), and cut short."""
    text = value if isinstance(value, str) else json.dumps(value)
    if len(text) > _SHOWN:
        text = text[:_SHOWN] + "…"
    return "".join(
        f"\\u{ord(c):04x}" if c.isspace() or unicodedata.category(c) in HIDDEN_CATEGORIES else c for c in text
    )


def _is_http_url(value: str) -> bool:
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL:
        return False
    return url.scheme in ("http", "https") and bool(url.host)


def _port(value: str) -> int:
    if not value.isdigit() or int(value) > 65535:
        raise argparse.ArgumentTypeError("a port is 0 to 65535")
    return int(value)


def _path(value: str) -> str:
    error = _path_error(value)
    if error:
        raise argparse.ArgumentTypeError(error)
    return value


def _path_error(value: str) -> str:
    if not value.startswith("/") or "?" in value or not value.isprintable() or " " in value:
        return "a path starts with / and has no spaces, controls or query"
    return ""
