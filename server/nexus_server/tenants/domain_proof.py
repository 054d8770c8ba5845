"""Proof that a tenant controls its custom domain: a DNS TXT record carrying its token.

A tenant setting a domain gets a token; it publishes `nexus-verification=<token>` as a TXT
record at `_nexus-challenge.<domain>` and asks VerifyTenantDomain, which looks the record up.
Until then the domain is pending: it resolves to no tenant and blocks no other tenant from
claiming it too (first to verify wins), so no one can squat a domain they do not control.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.resolver

from nexus_server.common.ids import random_base62

log = logging.getLogger("nexus.tenants")
CHALLENGE_PREFIX = "_nexus-challenge."
VALUE_PREFIX = "nexus-verification="
LOOKUP_SECONDS = 2.0


def new_token() -> str:
    return random_base62(32)


def challenge_name(domain: str) -> str:
    return CHALLENGE_PREFIX + domain


def challenge_value(token: str) -> str:
    return VALUE_PREFIX + token


class TxtLookup(Protocol):
    async def txt(self, name: str) -> list[str]:
        """The TXT strings at `name` (each record's strings joined); [] if none or unreachable."""
        ...


class DnsTxtLookup:
    """TXT lookups through the system's resolvers, or the `host:port` name servers given
    (NEXUS_DNS_NAMESERVERS), each lookup bounded by LOOKUP_SECONDS."""

    def __init__(self, nameservers: Sequence[str] = ()):
        self.resolver = dns.asyncresolver.Resolver(configure=not nameservers)
        if nameservers:
            self.resolver.nameservers = [_nameserver(n) for n in nameservers]
        self.resolver.lifetime = LOOKUP_SECONDS

    async def txt(self, name: str) -> list[str]:
        try:
            answer = await self.resolver.resolve(name, "TXT", search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers):
            return []
        except dns.exception.DNSException:
            log.info("TXT lookup of %s failed", name, exc_info=True)
            return []
        return [b"".join(record.strings).decode("utf-8", "replace") for record in answer]


def _nameserver(spec: str) -> dns.nameserver.Do53Nameserver:
    host, _, port = spec.strip().rpartition(":") if spec.count(":") == 1 else (spec.strip(), "", "")
    return dns.nameserver.Do53Nameserver(host or spec.strip(), int(port) if port else 53)


async def proves(lookup: TxtLookup, domain: str, token: str) -> bool:
    """Whether the domain's challenge record carries `token`."""
    return challenge_value(token) in await lookup.txt(challenge_name(domain))
