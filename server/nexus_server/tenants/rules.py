"""Input rules of the tenant contract (slugs, names, emails, ids, role lists, page sizes).

Each check returns FieldViolations rather than raising, so a request's every problem is
reported at once; `raise_if` turns a non-empty list into one InvalidArgument.
"""

from __future__ import annotations

import re
import unicodedata

from nexus_server.common import pagination
from nexus_server.common.errors import FieldViolation, InvalidArgument
from nexus_server.common.ids import is_id
from nexus_server.common.text import has_control
from nexus_server.common.validation import Violations
from nexus_server.tenants.domains import DomainError, normalise_domain
from nexus_server.tenants.permissions import BUILT_IN_ROLES

_SLUG = re.compile(r"^[a-z](?:[a-z0-9]|-(?!-)){1,61}[a-z0-9]$")
RESERVED_SLUGS = frozenset(
    {"www", "api", "admin", "app", "auth", "login", "mail", "nexus", "static", "status", "support", "root"}
)
_EMAIL = re.compile(r"^[^@\s<>(),;:\"\[\]\\]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
MAX_ROLES = 20


def raise_if(violations: list[FieldViolation]) -> None:
    if violations:
        raise InvalidArgument(violations)


def slug(value: str, field: str) -> tuple[str, list[FieldViolation]]:
    value = value.strip().lower()
    if not value.isascii() or not _SLUG.fullmatch(value):
        why = (
            "must be 3-63 lower-case letters, digits and single hyphens, starting with a letter "
            "and not ending with a hyphen"
        )
        return value, [FieldViolation(field, why)]
    if value in RESERVED_SLUGS:
        return value, [FieldViolation(field, f"{value!r} is reserved")]
    return value, []


def text_name(
    value: str, field: str, *, limit: int, required: bool = True
) -> tuple[str, list[FieldViolation]]:
    """Trimmed human text: 1-`limit` characters (0 allowed unless required), no control characters."""
    value = value.strip()
    if required and not value:
        return value, [FieldViolation(field, "is required")]
    if len(value) > limit:
        return value, [FieldViolation(field, f"must be at most {limit} characters")]
    if has_control(value):
        return value, [FieldViolation(field, "must not contain control characters")]
    return value, []


def description(value: str, field: str) -> tuple[str, list[FieldViolation]]:
    if len(value) > 500:
        return value, [FieldViolation(field, "must be at most 500 characters")]
    if any(unicodedata.category(c) in ("Cs", "Co", "Cn") or c == "\x00" for c in value):
        return value, [FieldViolation(field, "must be plain text")]
    return value, []


def domain(value: str, field: str) -> tuple[str, list[FieldViolation]]:
    try:
        return normalise_domain(value), []
    except DomainError as error:
        return "", [FieldViolation(field, str(error))]


def email(value: str, field: str) -> tuple[str, list[FieldViolation]]:
    value = value.strip().lower()
    if (
        len(value) > 254
        or not (value.isascii() and value.isprintable())
        or not _EMAIL.fullmatch(value)
        or ".." in value
    ):
        return value, [
            FieldViolation(field, "must be a single address local@domain of at most 254 characters")
        ]
    return value, []


def identifier(value: str, prefix: str, field: str, *, required: bool = True) -> list[FieldViolation]:
    if not value:
        return [FieldViolation(field, "is required")] if required else []
    if not is_id(value, prefix):
        return [FieldViolation(field, f"must be an id of the form {prefix}_…")]
    return []


def page_size(value: int, field: str = "page_size") -> tuple[int, list[FieldViolation]]:
    """common/pagination.py's bounds, in this module's (violations, value) style."""
    bad = Violations()
    size = pagination.page_size(value, bad, field)
    return size, list(bad.found)


def role_names(
    values: list[str], field: str, *, minimum: int, maximum: int = MAX_ROLES
) -> tuple[list[str], list[FieldViolation]]:
    """Shape only (existence is the workflow's): built-in names or `rol_` ids, de-duplicated,
    built-in roles first in their order, then custom ids sorted."""
    unique = list(dict.fromkeys(v.strip() for v in values))
    violations: list[FieldViolation] = []
    if len(unique) < minimum:
        violations.append(FieldViolation(field, f"must name at least {minimum} role"))
    if len(unique) > maximum:
        violations.append(FieldViolation(field, f"must name at most {maximum} roles"))
    for i, role in enumerate(unique):
        if role not in BUILT_IN_ROLES and not is_id(role, "rol"):
            violations.append(
                FieldViolation(f"{field}[{i}]", "must be owner, admin, member, read_only or a rol_… id")
            )
    return order_roles(unique), violations


def order_roles(roles: list[str] | tuple[str, ...] | set[str] | frozenset[str]) -> list[str]:
    built_in = [r for r in BUILT_IN_ROLES if r in roles]
    return built_in + sorted(r for r in set(roles) if r not in BUILT_IN_ROLES)
