"""The caller's network address, and which peers may speak for it (trusted proxies).

Behind Envoy a call's peer is Envoy, and the caller's address is the last entry of
`x-forwarded-for`. Our Envoy (deploy/envoy/envoy.yaml) takes the address from its own
connection (`use_remote_address`, `xff_num_trusted_hops`) and sends that one address as the
whole header; a proxy that appends instead puts the hop it saw last, after whatever the
client wrote, so the last entry is the only one a client cannot choose. The header is believed
only from a trusted proxy: a client reaching Nexus directly could otherwise name a new address
on every attempt and slip past the per-address sign-in limits.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Envoy beside Nexus (`make run`, one host). A deployment lists its proxies' networks.
DEFAULT_TRUSTED = "127.0.0.0/8,::1/128"


def is_ip(host: str) -> bool:
    """Whether `host` is an IP address literal (not a name)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def parse_networks(text: str) -> tuple[Network, ...]:
    """`10.0.0.0/8, ::1` → networks; empty or `none` trusts nobody. Raises ValueError."""
    text = text.strip()
    if not text or text.lower() == "none":
        return ()
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip())


def peer_address(peer: str) -> str:
    """The address of a grpc peer string: `ipv4:127.0.0.1:5555`, `ipv6:[::1]:5555`. An
    IPv4 client of a dual-stack listener (`ipv6:[::ffff:10.0.0.5]:5555`) is its IPv4
    address, so it is counted, logged and trusted as one."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv6" and rest.startswith("["):
        address = rest[1:].partition("]")[0]
        try:
            mapped = ipaddress.IPv6Address(address).ipv4_mapped
        except ValueError:
            return address
        return str(mapped) if mapped is not None else address
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    return ""


def client_address(peer: str, forwarded: str, trusted: Iterable[Network]) -> str:
    """The caller's address: the last `x-forwarded-for` entry when the peer is a trusted
    proxy and that entry is an address; the peer's own address otherwise."""
    address = peer_address(peer)
    if not forwarded or not _within(address, trusted):
        return address
    last = forwarded.rsplit(",", 1)[-1].strip()
    try:
        return str(ipaddress.ip_address(last))
    except ValueError:
        return address  # not an address: a proxy would not write that


def _within(address: str, networks: Iterable[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)
