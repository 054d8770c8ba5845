"""Custom domains: one normal form, so that uniqueness and host lookup compare like with like.

Normal form: surrounding whitespace, a `:port` and one trailing dot removed; Unicode labels
converted to punycode by IDNA 2008 with UTS #46 mapping (the `idna` package, which browsers'
rules follow); lower case; at least two labels of 1-63 letters, digits and inner hyphens;
at most 253 characters. IP literals, schemes, paths and wildcards are refused: a tenant's
domain must be a name Envoy can route by.
"""

from __future__ import annotations

import re

import idna

from nexus_server.common.addresses import is_ip

MAX_INPUT = 260
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_PORT = re.compile(r"^[0-9]{1,5}$")


class DomainError(ValueError):
    """The input cannot be a tenant's domain; the message says why, for a field violation."""


def _strip_port(host: str) -> str:
    if host.startswith("["):
        raise DomainError("IP address literals are not domains")
    if host.count(":") > 1:
        if is_ip(host):
            raise DomainError("IP address literals are not domains")
        raise DomainError("must be a host name, optionally with :port")
    name, sep, port = host.partition(":")
    if sep and (not _PORT.fullmatch(port) or int(port) > 65535):
        raise DomainError("the port after ':' must be a number from 0 to 65535")
    return name


def normalise_domain(raw: str) -> str:
    """The normal form of `raw`, or '' for an empty input; raises DomainError."""
    if len(raw) > MAX_INPUT:
        raise DomainError(f"must be at most {MAX_INPUT} characters")
    host = raw.strip()
    if not host:
        return ""
    if "://" in host or any(c in host for c in "/?#@\\*") or any(c.isspace() for c in host):
        raise DomainError("must be a bare host name: no scheme, path, credentials, spaces or '*'")
    host = _strip_port(host)
    if host.endswith("."):
        host = host[:-1]
    if not host:
        raise DomainError("must be a host name")
    if is_ip(host):
        raise DomainError("IP address literals are not domains")
    try:
        ascii_name = idna.encode(host, uts46=True, transitional=False).decode("ascii")
    except (idna.IDNAError, UnicodeError) as error:
        raise DomainError(f"is not a valid internationalised domain name ({error})") from None
    name = ascii_name.lower()
    labels = name.split(".")
    if len(labels) < 2:
        raise DomainError("must have at least two labels, as in portal.example.com")
    if len(name) > 253:
        raise DomainError("must be at most 253 characters once normalised")
    for label in labels:
        if not _LABEL.fullmatch(label):
            raise DomainError(f"label {label[:70]!r} must be 1-63 letters, digits or inner hyphens")
    if labels[-1].isdigit():
        # Dotted-decimal forms that inet_aton would accept (`1.2.3`, `010.1`): not names.
        raise DomainError("IP address literals are not domains")
    return name
