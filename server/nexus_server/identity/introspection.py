"""Token introspection (RFC 7662): whether an access token is valid now, and what it carries."""

from __future__ import annotations

from dataclasses import dataclass, field

from nexus_server.auth.principal import TenantStatus
from nexus_server.common.errors import FieldViolation, InvalidArgument, Unauthenticated
from nexus_server.identity import store
from nexus_server.identity.deps import Identity
from nexus_server.identity.tokens import MAX_TOKEN_CHARS


@dataclass(frozen=True)
class Introspection:
    active: bool
    claims: dict[str, object] = field(default_factory=dict)
    username: str = ""
    described: bool = True  # False: the bare answer, no subject, email, roles or projects


# What RFC 7662 needs to say a token is live, and nothing about whose it is: the answer a
# key of another tenant gets, so that no tenant learns another's users, emails or roles.
_BARE_CLAIMS = ("exp", "iat", "iss")


INACTIVE = Introspection(False)


async def introspect(
    deps: Identity, token: str, token_type_hint: str, *, reader_tenant_id: str
) -> Introspection:
    """`reader_tenant_id` is the calling key's tenant: only a token active in that tenant is
    described in full (subject, email, session, roles, projects); any other live token is
    answered with `active` and its times alone."""
    if not token:
        raise InvalidArgument(FieldViolation("token", "is required"))
    if len(token) > MAX_TOKEN_CHARS:
        raise InvalidArgument(FieldViolation("token", f"must be at most {MAX_TOKEN_CHARS} characters"))
    if len(token_type_hint) > 64:
        raise InvalidArgument(FieldViolation("token_type_hint", "must be at most 64 characters"))
    if token_type_hint not in ("", "access_token"):
        return INACTIVE
    try:
        verified = await deps.tokens.verify(token)
    except Unauthenticated:
        return INACTIVE
    principal = verified.principal
    async with deps.db.unit_of_work(readonly=True) as uow:
        user = await store.get_user(uow.session, principal.subject)
        session = await store.get_session(uow.session, principal.session_id)
    if user is None or user.status != "active" or session is None or session.end_time is not None:
        return INACTIVE
    directory = deps.tenants()
    if principal.tenant_id and directory is not None:
        status = await directory.status(principal.tenant_id)
        if status is not TenantStatus.ACTIVE:
            return INACTIVE
    if not principal.tenant_id or principal.tenant_id != reader_tenant_id:
        bare = {k: verified.claims[k] for k in _BARE_CLAIMS if k in verified.claims}
        return Introspection(True, bare, described=False)
    return Introspection(True, verified.claims, user.email)
