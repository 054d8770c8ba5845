"""Through Envoy: Subscribe is a Server-Sent Events stream of JSON messages that delivers
events as they are published; PublishEvent, ListEvents and GetEvent speak JSON."""

from __future__ import annotations

import asyncio
import http.client
import json
import queue
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Stack
from tests.support import event_keys

pytestmark = pytest.mark.e2e
WAIT = 30.0


def _database_url(stack: Stack) -> str:
    return f"sqlite+aiosqlite:///{Path(stack.env['NEXUS_VAR_DIR']) / 'nexus.db'}"


class SseReader:
    """Reads `data:` lines of an SSE response on a thread."""

    def __init__(self, port: int, path: str, key: str):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
        self.conn.request(
            "GET", path, headers={"authorization": f"Bearer {key}", "accept": "text/event-stream"}
        )
        self.response = self.conn.getresponse()
        self.messages: queue.Queue[dict[str, Any]] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        try:
            for raw in self.response:
                line = raw.decode().strip()
                if line.startswith("data:"):
                    self.messages.put(json.loads(line.removeprefix("data:").strip()))
        except (OSError, ValueError, AttributeError):
            pass  # closed by the test (http.client drops its file on close)

    def next_event(self) -> dict[str, Any]:
        while True:
            message = self.messages.get(timeout=WAIT)
            if "event" in message:
                return message["event"]  # type: ignore[no-any-return]

    def close(self) -> None:
        self.conn.close()
        self._thread.join(5)


async def test_a_subscription_through_envoy_streams_json_events_as_they_are_published(stack: Stack) -> None:
    publisher, reader = await event_keys(_database_url(stack))
    sse = await asyncio.to_thread(SseReader, stack.http_port, "/v1/events:subscribe?types=deal.*", reader)
    try:
        assert sse.response.status == 200
        assert sse.response.getheader("content-type", "").startswith("text/event-stream")
        opening = await asyncio.to_thread(sse.messages.get, True, WAIT)
        assert "heartbeat" in opening
        for n in range(3):
            body = json.dumps({"type": "deal.won", "source": "crm", "subject": f"d{n}", "data": {"n": n}})
            published = await asyncio.to_thread(
                stack.request,
                "POST",
                "/v1/events",
                headers={"authorization": f"Bearer {publisher}", "content-type": "application/json"},
                body=body.encode(),
            )
            assert published.status == 200, published.text
            sent = json.loads(published.body)
            event = await asyncio.to_thread(sse.next_event)  # arrives before the next publish
            assert (event["id"], event["subject"], event["data"]) == (sent["id"], f"d{n}", {"n": n})
    finally:
        await asyncio.to_thread(sse.close)


async def test_list_and_get_events_answer_json_through_envoy(stack: Stack) -> None:
    publisher, reader = await event_keys(_database_url(stack))
    body = json.dumps({"type": "lead.new", "source": "crm"}).encode()
    headers = {"authorization": f"Bearer {publisher}", "content-type": "application/json"}
    sent = json.loads(
        (await asyncio.to_thread(stack.request, "POST", "/v1/events", headers=headers, body=body)).body
    )
    auth = {"authorization": f"Bearer {reader}"}
    listed = await asyncio.to_thread(
        stack.request, "GET", "/v1/events?types=lead.*&order_by=sequence%20desc", headers=auth
    )
    got = await asyncio.to_thread(stack.request, "GET", f"/v1/events/{sent['id']}", headers=auth)
    assert listed.status == 200 and json.loads(listed.body)["events"][0]["id"] == sent["id"]
    assert got.status == 200 and json.loads(got.body)["sequence"] == sent["sequence"]
