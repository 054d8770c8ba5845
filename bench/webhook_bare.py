"""The webhook floor: a bare httpx.AsyncClient POSTing the same bodies to the same receiver.

`python -m bench.runner webhooks-bare` holds one httpx.AsyncClient made as Nexus's Sender
makes its own (events/webhooks/sender.py: the same timeout, limits, no redirects, no proxy
from the environment, the same default headers) — or, with the setting
`client_per_endpoint`, one such client per endpoint — and a control port on 127.0.0.1 (the port
it says READY with). The driver sends it, one JSON line each:

    {"kind": "plan", "urls": [...], "ids": [...], "bodies": [...]}   → {"kind": "planned"}
    {"kind": "send", "first": a, "last": b}                          → {"kind": "sent", "errors": {...}}

On `plan` it signs every body for every endpoint (Standard Webhooks headers, an own random
secret per endpoint, as Nexus's endpoints have), before any window. On `send` it starts one
task per endpoint, each POSTing events a..b-1 to its URL one after the other, and answers
when all are done. No database, no fan-out, no signing in the window, no Nexus code: what
one Python process with httpx does per delivery on this machine, the floor Nexus's
deliveries/s are judged against.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import socket
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from bench.load import LoadFailed

USER_AGENT = "Nexus-Webhooks/1"  # the Sender's
_REPLY_TIMEOUT = 120.0


def _signed(message_id: str, timestamp: int, body: bytes, key: bytes) -> dict[str, str]:
    signed = f"{message_id}.{timestamp}.".encode() + body
    signature = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": f"v1,{signature}",
    }


async def serve(args: argparse.Namespace) -> None:
    import httpx

    from bench.runner import _ready, _until_signalled

    def new_client() -> httpx.AsyncClient:
        return httpx.AsyncClient(
            timeout=httpx.Timeout(15.0),
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=512, keepalive_expiry=30),
            headers={"user-agent": USER_AGENT, "content-type": "application/json"},
        )

    # One client for all endpoints, as Nexus's Sender has; or (client_per_endpoint) one each,
    # so that no pool holds more than one connection.
    own = bool(json.loads(args.settings).get("client_per_endpoint"))
    clients: list[httpx.AsyncClient] = [new_client()]
    urls: list[str] = []
    bodies: list[bytes] = []
    headers: list[list[dict[str, str]]] = []  # [endpoint][event]

    async def endpoint(k: int, first: int, last: int, errors: Counter[str]) -> None:
        url, mine = urls[k], headers[k]
        client = clients[k if own else 0]
        for e in range(first, last):
            try:
                response = await client.post(url, content=bodies[e], headers=mine[e])
            except httpx.HTTPError as error:
                errors[f"sender: {type(error).__name__}"] += 1
                continue
            if not 200 <= response.status_code < 300:
                errors[f"sender: HTTP {response.status_code}"] += 1

    async def control(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                message = json.loads(line)
                reply: dict[str, Any]
                if message["kind"] == "plan":
                    urls[:] = message["urls"]
                    if own:
                        clients.extend(new_client() for _ in range(len(urls) - len(clients)))
                    bodies[:] = [body.encode() for body in message["bodies"]]
                    stamp = int(time.time())
                    keys = [os.urandom(32) for _ in urls]
                    headers[:] = [
                        [_signed(i, stamp, body, key) for i, body in zip(message["ids"], bodies, strict=True)]
                        for key in keys
                    ]
                    reply = {"kind": "planned"}
                else:
                    errors: Counter[str] = Counter()
                    first, last = message["first"], message["last"]
                    await asyncio.gather(*(endpoint(k, first, last, errors) for k in range(len(urls))))
                    reply = {"kind": "sent", "errors": dict(errors)}
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(control, "127.0.0.1", 0)
    _ready(server.sockets[0].getsockname()[1])
    try:
        await _until_signalled()
    finally:
        server.close()
        for client in clients:
            await client.aclose()


def render_bodies(tenant_id: str, count: int) -> tuple[list[str], list[str]]:
    """(ids, bodies) of `count` events shaped as Nexus renders a webhook's body (the Event
    message as compact JSON, worker.py's `_body`), carrying the data Nexus's row publishes."""
    from google.protobuf import json_format, timestamp_pb2

    from bench.webhook_load import EVENT_SOURCE, EVENT_TYPE, event_data
    from nexus.events.v1 import event_pb2

    now = timestamp_pb2.Timestamp()
    now.GetCurrentTime()
    ids, bodies = [], []
    for n in range(count):
        event_id = f"evt_{os.urandom(13).hex()[:26]}"
        message = event_pb2.Event(
            id=event_id,
            tenant_id=tenant_id,
            sequence=n + 3,
            source=EVENT_SOURCE,
            type=EVENT_TYPE,
            subject=event_data(n)["deal_id"],
            time=now,
            create_time=now,
            publisher_api_key_id=f"key_{os.urandom(8).hex()}",
        )
        message.data.update(event_data(n))
        as_dict = json_format.MessageToDict(message, preserving_proto_field_name=True)
        ids.append(event_id)
        bodies.append(json.dumps(as_dict, separators=(",", ":"), ensure_ascii=False))
    return ids, bodies


class BareSide:
    """The driver's end of the control port (bench.webhook_load.Side)."""

    def __init__(self, port: int, events: int, per_endpoint: bool):
        self.per_endpoint = per_endpoint
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=_REPLY_TIMEOUT)
        self.file = self.sock.makefile("rwb")
        self.events = events

    def _send(self, message: dict[str, Any]) -> None:
        self.file.write(json.dumps(message).encode() + b"\n")
        self.file.flush()

    def _reply(self, kind: str) -> dict[str, Any]:
        line = self.file.readline()
        if not line:
            raise LoadFailed(f"the bare webhook sender closed its control port before {kind!r}")
        message: dict[str, Any] = json.loads(line)
        if message.get("kind") != kind:
            raise LoadFailed(f"expected {kind!r} from the bare webhook sender, got {message!r}")
        return message

    def setup(self, urls: Sequence[str]) -> None:
        ids, bodies = render_bodies("ten_" + os.urandom(8).hex(), self.events)
        self._send({"kind": "plan", "urls": list(urls), "ids": ids, "bodies": bodies})
        self._reply("planned")

    def start(self, first: int, last: int) -> None:
        self._send({"kind": "send", "first": first, "last": last})

    def finish(self, expected: int) -> tuple[dict[str, int], float]:
        return dict(self._reply("sent")["errors"]), 0.0

    def notes(self) -> list[str]:
        clients = "one httpx.AsyncClient per endpoint" if self.per_endpoint else "one httpx.AsyncClient"
        return [
            f"the floor: {clients} (the Sender's settings), one task per endpoint POSTing its events "
            "in order; bodies and signatures made before the window"
        ]

    def diagnose(self) -> str:
        return "the bare sender's answer is still awaited"

    def close(self) -> None:
        self.file.close()
        self.sock.close()
