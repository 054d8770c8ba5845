"""Input rules of the tenant contract (slugs, names, emails, ids, role lists, page sizes).

Each rule takes the request's `Violations` and returns the cleaned value, so a request's
every problem is reported at once (common/validation.py):

    with Violations() as bad:
        slug = rules.slug(request.tenant.slug, "tenant.slug", bad)
        name = rules.text_name(request.tenant.display_name, "tenant.display_name", bad, limit=100)
"""

from __future__ import annotations

import re
import unicodedata

from nexus_server.common.ids import is_id
from nexus_server.common.pagination import page_size
from nexus_server.common.text import has_control
from nexus_server.common.validation import Violations
from nexus_server.tenants.domains import DomainError, normalise_domain
from nexus_server.tenants.permissions import BUILT_IN_ROLES

__all__ = [
    "MAX_ROLES",
    "RESERVED_SLUGS",
    "description",
    "domain",
    "email",
    "identifier",
    "order_roles",
    "page_size",  # common/pagination.py's bounds: (value, bad, field="page_size")
    "role_names",
    "slug",
    "text_name",
]

_SLUG = re.compile(r"^[a-z](?:[a-z0-9]|-(?!-)){1,61}[a-z0-9]$")
RESERVED_SLUGS = frozenset(
    {"www", "api", "admin", "app", "auth", "login", "mail", "nexus", "static", "status", "support", "root"}
)
_EMAIL = re.compile(r"^[^@\s<>(),;:\"\[\]\\]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
MAX_ROLES = 20


def slug(value: str, field: str, bad: Violations) -> str:
    value = value.strip().lower()
    if not value.isascii() or not _SLUG.fullmatch(value):
        bad.add(
            field,
            "must be 3-63 lower-case letters, digits and single hyphens, starting with a letter "
            "and not ending with a hyphen",
        )
    elif value in RESERVED_SLUGS:
        bad.add(field, f"{value!r} is reserved")
    return value


def text_name(value: str, field: str, bad: Violations, *, limit: int, required: bool = True) -> str:
    """Trimmed human text: 1-`limit` characters (0 allowed unless required), no control characters."""
    value = value.strip()
    if required and not value:
        bad.add(field, "is required")
    elif len(value) > limit:
        bad.add(field, f"must be at most {limit} characters")
    elif has_control(value):
        bad.add(field, "must not contain control characters")
    return value


def description(value: str, field: str, bad: Violations) -> str:
    if len(value) > 500:
        bad.add(field, "must be at most 500 characters")
    elif any(unicodedata.category(c) in ("Cs", "Co", "Cn") or c == "\x00" for c in value):
        bad.add(field, "must be plain text")
    return value


def domain(value: str, field: str, bad: Violations) -> str:
    """The normal form of a custom domain ('' for none, or when it is not one)."""
    try:
        return normalise_domain(value)
    except DomainError as error:
        bad.add(field, str(error))
        return ""


def email(value: str, field: str, bad: Violations) -> str:
    value = value.strip().lower()
    if (
        len(value) > 254
        or not (value.isascii() and value.isprintable())
        or not _EMAIL.fullmatch(value)
        or ".." in value
    ):
        bad.add(field, "must be a single address local@domain of at most 254 characters")
    return value


def identifier(value: str, prefix: str, field: str, bad: Violations, *, required: bool = True) -> str:
    if not value:
        if required:
            bad.add(field, "is required")
    elif not is_id(value, prefix):
        bad.add(field, f"must be an id of the form {prefix}_…")
    return value


def role_names(
    values: list[str], field: str, bad: Violations, *, minimum: int, maximum: int = MAX_ROLES
) -> list[str]:
    """Shape only (existence is the workflow's): built-in names or `rol_` ids, de-duplicated,
    built-in roles first in their order, then custom ids sorted."""
    unique = list(dict.fromkeys(v.strip() for v in values))
    if len(unique) < minimum:
        bad.add(field, f"must name at least {minimum} role")
    if len(unique) > maximum:
        bad.add(field, f"must name at most {maximum} roles")
    for i, role in enumerate(unique):
        if role not in BUILT_IN_ROLES and not is_id(role, "rol"):
            bad.add(f"{field}[{i}]", "must be owner, admin, member, read_only or a rol_… id")
    return order_roles(unique)


def order_roles(roles: list[str] | tuple[str, ...] | set[str] | frozenset[str]) -> list[str]:
    built_in = [r for r in BUILT_IN_ROLES if r in roles]
    return built_in + sorted(r for r in set(roles) if r not in BUILT_IN_ROLES)
