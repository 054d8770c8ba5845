"""Sessions and their token pairs: start, rotate, end.

A session's refresh tokens form a chain (refresh_tokens.py): each refresh spends the current
token and issues its successor, derived from it with a server key, so a client that retries
a refresh whose answer it lost gets the same successor while that successor is unspent and
the retry falls in the grace window. Any other replay of a spent token is reuse: the session
ends everywhere (`session.revoked`, reason `refresh_token_reuse`).

A refresh is one UPDATE of the session row (compare-and-set on the current token's digest,
which also checks the session and its user and slides the expiry) plus signing the access
token; only the rare cases (a retry, reuse, an expired token, a tenant switch) read more.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from nexus_server.auth.principal import TenantStatus
from nexus_server.common.errors import PermissionDenied, Unauthenticated
from nexus_server.common.ids import new_id
from nexus_server.db.uow import UnitOfWork
from nexus_server.identity import refresh_tokens, store
from nexus_server.identity.deps import Client, Identity
from nexus_server.identity.digests import digest
from nexus_server.identity.tokens import SESSION, AccessClaims

REUSE_GRACE = timedelta(seconds=30)
# Revocations are kept until the last access token they block has expired, plus skew.
_SKEW = timedelta(seconds=60)


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    refresh_expires_in: int
    session_id: str
    tenant_id: str


def _ms(now: datetime) -> int:
    return int(now.timestamp() * 1000)


@dataclass(frozen=True)
class Holder:
    """Whose session it is, as far as its tokens' claims go."""

    user_id: str
    platform_admin: bool


async def choose_tenant(
    deps: Identity, uow: UnitOfWork, user: Holder, requested: str, *, default_only: bool
) -> tuple[str, tuple[str, ...]]:
    """The active tenant and the user's roles in it. A named tenant must be one the user
    belongs to and not suspended; with none named, the user's only tenant (if exactly one).
    Tenancy comes through the tenants capability's port (`deps.standings`)."""
    standings = deps.standings
    if requested:
        standing = await standings.standing_in(uow, requested, user.user_id) if standings else None
        if standing is None or standing.status == TenantStatus.DELETED.value:
            raise PermissionDenied(
                f"you are not a member of tenant {requested}", reason="TENANT_ACCESS_DENIED"
            )
        if standing.roles is None and not user.platform_admin:
            raise PermissionDenied(
                f"you are not a member of tenant {requested}", reason="TENANT_ACCESS_DENIED"
            )
        if standing.status == TenantStatus.SUSPENDED.value and not user.platform_admin:
            raise PermissionDenied(f"tenant {requested} is suspended", reason="TENANT_SUSPENDED")
        return requested, standing.roles or ()
    if not default_only or standings is None:
        return "", ()
    only = await standings.sole_tenant(uow, user.user_id)
    if only is not None and only.status == TenantStatus.ACTIVE.value:
        return only.tenant_id, only.roles or ()
    return "", ()


async def _claims(
    deps: Identity,
    uow: UnitOfWork,
    user: Holder,
    session_id: str,
    tenant_id: str,
    roles: tuple[str, ...],
) -> AccessClaims:
    projects: dict[str, str] = {}
    if tenant_id and deps.project_grants is not None:
        projects = await deps.project_grants(uow, tenant_id, user.user_id)
    return AccessClaims(
        user.user_id, session_id, tenant_id, tuple(sorted(roles)), projects, user.platform_admin
    )


def device_hash(client: Client) -> str:
    """What identifies a device the user signed in from: its user agent and address."""
    return hashlib.sha256(f"{client.user_agent}\n{client.ip_address}".encode()).hexdigest()


async def start(
    deps: Identity,
    uow: UnitOfWork,
    user: store.UserRow,
    client: Client,
    tenant_id: str,
    roles: tuple[str, ...],
) -> TokenPair:
    """Open a session for `user` and return its first token pair; publishes `session.created`
    and mails a notice when the device is new to an account that has signed in before."""
    now = uow.clock.now()
    settings = deps.settings
    session_id = new_id("ses", now_ms=_ms(now))
    refresh = refresh_tokens.first(deps.refresh_key, session_id)
    expire = now + settings.refresh_token_ttl
    await store.insert_session(
        uow.session,
        store.SessionRow(
            id=session_id,
            user_id=user.id,
            tenant_id=tenant_id,
            user_agent=client.user_agent[:512],
            ip_address=client.ip_address[:64],
            create_time=now,
            last_seen_time=now,
            expire_time=expire,
            end_time=None,
            end_reason=None,
            refresh_hash=digest(refresh),
            previous_refresh_hash=None,
            rotate_time=None,
        ),
    )
    await uow.append_event(
        "session.created",
        {"session_id": session_id, "user_id": user.id, "tenant_id": tenant_id},
        subject=user.id,
    )
    device = device_hash(client)
    first_login = user.last_login_time is None
    if await store.remember_device(uow.session, user.id, device, now) and not first_login:
        await deps.mailer.queue(
            uow,
            user.email,
            "New sign-in to your Nexus account",
            "Your account was signed in from a device we have not seen before.\n\n"
            f"Device: {client.user_agent or 'unknown'}\nAddress: {client.ip_address or 'unknown'}\n"
            f"Time: {now.isoformat()}\n\nIf this was not you, change your password now.\n",
        )
    holder = Holder(user.id, user.platform_admin)
    access = await deps.tokens.issue(await _claims(deps, uow, holder, session_id, tenant_id, roles), now)
    return TokenPair(
        access,
        refresh,
        int(settings.access_token_ttl.total_seconds()),
        int(settings.refresh_token_ttl.total_seconds()),
        session_id,
        tenant_id,
    )


def _invalid() -> Unauthenticated:
    return Unauthenticated("the refresh token is not valid; sign in again", reason="REFRESH_TOKEN_INVALID")


@dataclass(frozen=True)
class Refreshed:
    pair: TokenPair | None  # None: the token was reused and the session has been ended


async def refresh(deps: Identity, uow: UnitOfWork, token: str, tenant_id: str) -> Refreshed:
    """Rotate the session's refresh token. Returns Refreshed(None) after ending the session
    for reuse; the caller commits that and then refuses (REFRESH_TOKEN_REUSED)."""
    session_id = refresh_tokens.session_of(deps.refresh_key, token)
    if session_id is None:
        raise _invalid()
    now = uow.clock.now()
    successor = refresh_tokens.successor(deps.refresh_key, session_id, token)
    expire = now + deps.settings.refresh_token_ttl
    rotated = await store.rotate_refresh(
        uow.session, session_id, digest(token), digest(successor), now=now, expire_time=expire
    )
    if rotated is not None:
        holder = Holder(rotated.user_id, rotated.platform_admin)
        pair = await _pair(deps, uow, holder, session_id, rotated.tenant_id, successor, expire, tenant_id)
        return Refreshed(pair)
    return await _not_current(deps, uow, session_id, token, successor, tenant_id)


async def _not_current(
    deps: Identity, uow: UnitOfWork, session_id: str, token: str, successor: str, tenant_id: str
) -> Refreshed:
    """A token this server issued to the session that is not (or no longer) its current one:
    expired, the session or its user gone, a retry of the immediate predecessor, or reuse."""
    now = uow.clock.now()
    session = await store.get_session(uow.session, session_id)
    if session is None or session.end_time is not None:
        raise _invalid()
    user = await store.get_user(uow.session, session.user_id)
    if user is None or user.status != "active":
        raise _invalid()
    token_hash = digest(token)
    if token_hash == session.refresh_hash:
        if session.expire_time <= now:
            raise Unauthenticated(
                "the refresh token has expired; sign in again", reason="REFRESH_TOKEN_EXPIRED"
            )
        raise _invalid()
    if (
        token_hash == session.previous_refresh_hash
        and session.rotate_time is not None
        and now - session.rotate_time <= REUSE_GRACE
        and digest(successor) == session.refresh_hash
    ):
        # A lost-answer retry: the same successor, which is still the current token.
        holder = Holder(user.id, user.platform_admin)
        pair = await _pair(
            deps, uow, holder, session.id, session.tenant_id, successor, session.expire_time, tenant_id
        )
        return Refreshed(pair)
    await end(deps, uow, [session.id], "refresh_token_reuse")
    return Refreshed(None)


async def _pair(
    deps: Identity,
    uow: UnitOfWork,
    user: Holder,
    session_id: str,
    session_tenant: str,
    refresh_token: str,
    expire: datetime,
    requested_tenant: str,
) -> TokenPair:
    now = uow.clock.now()
    tenant_id = ""
    roles: tuple[str, ...] = ()
    if requested_tenant or session_tenant:
        try:
            tenant_id, roles = await choose_tenant(
                deps, uow, user, requested_tenant or session_tenant, default_only=False
            )
        except PermissionDenied:
            if requested_tenant:
                raise
            tenant_id, roles = "", ()  # the session's tenant went away: continue without one
    if tenant_id != session_tenant:
        await store.set_session_tenant(uow.session, session_id, tenant_id)
    access = await deps.tokens.issue(await _claims(deps, uow, user, session_id, tenant_id, roles), now)
    return TokenPair(
        access,
        refresh_token,
        int(deps.settings.access_token_ttl.total_seconds()),
        max(0, int((expire - now).total_seconds())),
        session_id,
        tenant_id,
    )


async def end(deps: Identity, uow: UnitOfWork, session_ids: list[str], reason: str) -> int:
    """End the open sessions among `session_ids`: their refresh tokens stop at once and their
    access tokens are refused on every replica (revocation feed). Returns how many ended."""
    now = uow.clock.now()
    until = now + deps.settings.access_token_ttl + _SKEW
    ended = 0
    for session_id in session_ids:
        if not await store.end_session(uow.session, session_id, now, reason):
            continue
        session = await store.get_session(uow.session, session_id)
        await deps.revocations.revoke(uow, SESSION, session_id, until=until)
        await uow.append_event(
            "session.revoked",
            {"session_id": session_id, "user_id": session.user_id if session else "", "reason": reason},
            subject=session.user_id if session else "",
        )
        ended += 1
    return ended


async def end_all(deps: Identity, uow: UnitOfWork, user_id: str, reason: str, *, keep: str = "") -> int:
    open_sessions = await store.active_sessions(uow.session, user_id, uow.clock.now(), limit=100_000)
    return await end(deps, uow, [s.id for s in open_sessions if s.id != keep], reason)
