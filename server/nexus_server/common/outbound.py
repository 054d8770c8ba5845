"""The guard on every outbound request Nexus makes to a URL a tenant gave it (webhook
endpoints): such a request must never reach Nexus's own network (its database, its cloud's
metadata service at 169.254.169.254, an admin port on loopback) unless a development
setting allows private targets.

Two steps, because DNS can change between them:
- `check_url`, when the URL is stored: https (http only when private targets are allowed),
  a host, no credentials in it, a sane port; a literal IP must be public. IPv4 written as one
  number, in hex or octal (`http://2130706433/`, `0x7f.1`) is read the way `inet_aton` and
  so every HTTP client reads it, and judged by what it means.
- `resolve_public`, at every delivery: every address the host resolves to must be public (a
  name that resolves to one private and one public address is refused: rebinding). The
  caller then connects to one of the returned addresses, not to the name again, so the
  address checked is the address used.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import SplitResult, urlsplit

MAX_URL = 2048
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
# Refused whatever the Python patch level's `is_global` table says (older ones miss some).
_NOT_PUBLIC = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "100.64.0.0/10",  # carrier-grade NAT
        "192.0.0.0/24",  # IETF protocol assignments
        "198.18.0.0/15",  # benchmarking
        "64:ff9b::/96",  # NAT64: refused, though it may embed a public address (safe side)
        "64:ff9b:1::/48",
        "2001:db8::/32",
        "3fff::/20",  # documentation (2024)
    )
)

Resolver = Callable[[str, int], Awaitable[list[str]]]


class UrlNotAllowed(Exception):
    """Why a URL may not be called, for people; it names no internal detail."""


def is_public(address: Address) -> bool:
    """Whether an address is on the public internet (never loopback, private, link-local,
    shared, reserved, multicast, documentation, or a v6 form embedding such a v4 address)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour or (address.teredo[1] if address.teredo else None)
        if embedded is not None:
            return is_public(embedded)
        if address.packed[:12] == bytes(12):  # IPv4-compatible ::a.b.c.d (deprecated)
            return is_public(ipaddress.IPv4Address(address.packed[12:]))
    if any(address.version == n.version and address in n for n in _NOT_PUBLIC):
        return False
    return bool(
        address.is_global
        and not address.is_multicast
        and not address.is_reserved
        and not address.is_loopback
        and not address.is_link_local
        and not address.is_private
        and not address.is_unspecified
    )


def literal_address(host: str) -> Address | None:
    """The address a host names when it is an IP literal in any form a client accepts."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))  # 2130706433, 0x7f.1, 0177.0.0.1
    except OSError:
        return None


def check_url(url: str, *, allow_private: bool) -> SplitResult:
    if len(url) > MAX_URL:
        raise UrlNotAllowed(f"the URL is longer than {MAX_URL} characters")
    if not url.isascii() or not url.isprintable() or " " in url:
        # Control characters (NUL among them) and spaces are no part of a URL; clients strip
        # some of them differently (WHATWG drops tabs), so a URL is refused, not cleaned.
        raise UrlNotAllowed("the URL must be printable ASCII without spaces (percent-encode the rest)")
    try:
        parts = urlsplit(url)
        parts.hostname  # noqa: B018 - parses a bracketed address, which may be malformed
    except ValueError:
        raise UrlNotAllowed("the URL cannot be parsed (check the brackets of an IPv6 address)") from None
    if parts.scheme != "https" and not (allow_private and parts.scheme == "http"):
        raise UrlNotAllowed("the URL must be https")
    if "@" in parts.netloc:
        raise UrlNotAllowed("the URL must not carry credentials")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise UrlNotAllowed("the URL has no host")
    if not host.isascii() or "%" in host:
        # Fullwidth digits and escapes are read as an address by some resolvers: ask for IDNA.
        raise UrlNotAllowed("the URL's host must be ASCII (IDNA for international names)")
    try:
        port = parts.port
    except ValueError:
        raise UrlNotAllowed("the URL's port is not a number from 1 to 65535") from None
    if port is not None and not 1 <= port <= 65535:
        raise UrlNotAllowed("the URL's port is not a number from 1 to 65535")
    address = literal_address(host)
    if address is None and host.rsplit(".", 1)[-1].isdigit():
        raise UrlNotAllowed("the URL's host is neither a name nor an address")
    if address is not None and not allow_private and not is_public(address):
        raise UrlNotAllowed("the URL points at a private, loopback or link-local address")
    if not allow_private and (host == "localhost" or host.endswith(".localhost")):
        raise UrlNotAllowed("the URL points at this machine")
    return parts


async def _system_resolver(host: str, port: int) -> list[str]:
    infos: list[Any] = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))  # the resolver's order, once each


async def resolve_public(
    host: str, port: int, *, allow_private: bool, resolver: Resolver | None = None
) -> list[str]:
    """The addresses to connect to; UrlNotAllowed if the name does not resolve or any of its
    addresses is not public (unless private targets are allowed)."""
    try:
        found = await (resolver or _system_resolver)(host, port)
    except (OSError, UnicodeError):  # idna refuses empty or over-long labels
        raise UrlNotAllowed("the host does not resolve") from None
    if not found:
        raise UrlNotAllowed("the host does not resolve")
    if not allow_private:
        for text in found:
            address = ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone
            if not is_public(address):
                raise UrlNotAllowed("the host resolves to a private, loopback or link-local address")
    return found
