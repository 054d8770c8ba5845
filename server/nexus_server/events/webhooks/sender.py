"""The HTTP side of webhooks: resolve an endpoint's host, refuse private targets, POST.

The host is resolved once per round of attempts to one endpoint (`target`), every address
checked (common/outbound.py), and the request goes to the checked address itself, with the
name in the Host header and as the TLS server name, so DNS cannot answer differently
between the check and the connection. Redirects are not followed (a 3xx is an answer like
any other), the whole attempt is bounded by the timeout, and only the start of the body is
read, so a hostile endpoint can neither hold a sender nor fill its memory.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx

from nexus_server.common import outbound
from nexus_server.events.webhooks.rules import MAX_EXCERPT, Outcome, excerpt, retry_after

USER_AGENT = "Nexus-Webhooks/1"


@dataclass(frozen=True)
class Target:
    """Where an endpoint's requests go: its URL with the host replaced by a checked
    address, and the name that stays in the Host header and TLS."""

    url: httpx.URL
    host_header: str
    server_name: str | None


class Sender:
    def __init__(
        self,
        *,
        timeout: timedelta,
        allow_private: bool,
        resolver: outbound.Resolver | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_clients: int = 1024,
    ):
        self.timeout = timeout.total_seconds()
        self.allow_private = allow_private
        self.resolver = resolver
        self.transport = transport
        self.max_clients = max_clients
        # One client (one pool, one kept-alive connection) per endpoint: an endpoint sends one
        # request at a time, and httpcore's pool re-checks every connection for each waiting
        # request (encode/httpcore#1035), so one pool shared by a hundred endpoints spent
        # most of the sender's CPU on its own bookkeeping. They share one TLS context.
        self._tls = ssl.create_default_context()
        self._clients: OrderedDict[str, httpx.AsyncClient] = OrderedDict()
        self._closing: set[asyncio.Task[None]] = set()

    def _client(self, key: str) -> httpx.AsyncClient:
        client = self._clients.get(key)
        if client is not None:
            self._clients.move_to_end(key)
            return client
        client = httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout),
            follow_redirects=False,
            trust_env=False,  # no proxy from the environment: the checked address is the one used
            verify=self._tls,
            limits=httpx.Limits(max_connections=2, max_keepalive_connections=1, keepalive_expiry=30),
            transport=self.transport,
            headers={"user-agent": USER_AGENT, "content-type": "application/json"},
        )
        self._clients[key] = client
        if len(self._clients) > self.max_clients:  # the least recently used goes
            _, evicted = self._clients.popitem(last=False)
            closing = asyncio.get_running_loop().create_task(evicted.aclose())
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
        return client

    async def target(self, url: str) -> Target:
        """The checked target of `url`; UrlNotAllowed if it may not be called now."""
        parts = outbound.check_url(url, allow_private=self.allow_private)
        host = (parts.hostname or "").rstrip(".")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        literal = outbound.literal_address(host)
        if literal is not None:
            address = str(literal)
        else:
            found = await outbound.resolve_public(
                host, port, allow_private=self.allow_private, resolver=self.resolver
            )
            address = found[0]
        parsed = httpx.URL(url)
        shown = f"[{host}]" if ":" in host else host
        host_header = shown if parts.port is None else f"{shown}:{parts.port}"
        name = None if literal is not None or parts.scheme != "https" else host
        return Target(parsed.copy_with(host=_bare(address)), host_header, name)

    async def post(
        self, endpoint_id: str, target: Target, headers: dict[str, str], body: bytes, now: datetime
    ) -> Outcome:
        started = time.perf_counter()
        extensions = {"sni_hostname": target.server_name} if target.server_name else {}
        client = self._client(endpoint_id)
        try:
            async with asyncio.timeout(self.timeout):
                async with client.stream(
                    "POST",
                    target.url,
                    content=body,
                    headers={**headers, "host": target.host_header},
                    extensions=extensions,
                ) as response:
                    head = await _start_of(response)
        except TimeoutError:
            return Outcome(0, _since(started), error=f"timed out after {self.timeout:g} s")
        except httpx.HTTPError as error:
            return Outcome(0, _since(started), error=_describe(error))
        return Outcome(
            response.status_code,
            _since(started),
            excerpt=excerpt(head),
            retry_after=retry_after(response.headers.get("retry-after"), now),
        )

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), OrderedDict()
        await asyncio.gather(*(c.aclose() for c in clients), *self._closing, return_exceptions=True)


def _bare(address: str) -> str:
    """An address as httpx wants a host: IPv6 without brackets or zone."""
    return str(ipaddress.ip_address(address.split("%", 1)[0]))


async def _start_of(response: httpx.Response) -> bytes:
    taken = b""
    async for chunk in response.aiter_raw():
        taken += chunk
        if len(taken) >= MAX_EXCERPT * 4:
            break
    return taken


def _since(started: float) -> timedelta:
    return timedelta(seconds=time.perf_counter() - started)


def _describe(error: httpx.HTTPError) -> str:
    kinds: dict[type[httpx.HTTPError], str] = {
        httpx.ConnectError: "could not connect",
        httpx.ConnectTimeout: "timed out connecting",
        httpx.ReadTimeout: "timed out waiting for the answer",
        httpx.WriteTimeout: "timed out sending",
        httpx.RemoteProtocolError: "the endpoint broke the HTTP protocol",
    }
    kind = kinds.get(type(error), "the request failed")
    detail = str(error)[:200]
    return f"{kind}: {detail}" if detail else kind
