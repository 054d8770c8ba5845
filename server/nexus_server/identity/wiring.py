"""Builds the identity capability: its servicer, the TokenVerifier port the authentication
layer uses, and its background tasks (key reload, mail sender)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import partial

from nexus_server.app.context import AppContext
from nexus_server.common.sealing import Sealer
from nexus_server.config import Settings
from nexus_server.identity import accounts
from nexus_server.identity.deps import Identity
from nexus_server.identity.keys import KeyRing
from nexus_server.identity.mail import Mailer
from nexus_server.identity.passwords import Hasher
from nexus_server.identity.resealing import reseal_all
from nexus_server.identity.reset_requests import ResetRequests
from nexus_server.identity.service import IdentityServicer
from nexus_server.identity.throttle import Policy, Throttle
from nexus_server.identity.tokens import AccessTokens


def _sealer(settings: Settings, purpose: str) -> Sealer:
    return Sealer(settings.secret_key, purpose, previous=settings.secret_key_previous)


def build_identity(ctx: AppContext) -> Identity:
    """The identity workflows' dependencies (also used by the CLI and tests)."""
    settings = ctx.settings
    keys = KeyRing(ctx.db, _sealer(settings, "signing-keys"))
    tokens = AccessTokens(
        keys,
        ctx.revocations,
        issuer=settings.issuer,
        audience=settings.audience,
        ttl=settings.access_token_ttl,
    )
    mailer = Mailer(
        ctx.db,
        _sealer(settings, "mail-outbox"),
        sender=settings.mail_from,
        smtp_url=settings.smtp_url,
        var_dir=settings.var_dir,
    )
    return Identity(
        settings=settings,
        db=ctx.db,
        revocations=ctx.revocations,
        hasher=Hasher(settings.bcrypt_rounds),
        keys=keys,
        tokens=tokens,
        throttle=Throttle(ctx.db, Policy(signup_limit=ctx.settings.signups_per_address)),
        mailer=mailer,
        reset_requests=ResetRequests(ctx.db),
        totp_sealer=_sealer(settings, "totp-secrets"),
        refresh_key=hashlib.sha256(b"nexus refresh successor\0" + settings.secret_key.encode()).digest(),
        tenants=lambda: ctx.tenants,
    )


@dataclass(frozen=True)
class Built:
    servicer: IdentityServicer
    deps: Identity  # the workflows' dependencies: its mailer and token verifier are ports


def build(ctx: AppContext) -> Built:
    deps = build_identity(ctx)
    ctx.tokens = deps.tokens

    async def keys_then_reload() -> None:
        if deps.settings.secret_key_previous:
            await reseal_all(
                deps.db, signing=deps.keys.sealer, totp=deps.totp_sealer, mail=deps.mailer.sealer
            )
        await deps.keys.ensure_signing_key()
        await deps.keys.run()

    async def close_hasher() -> None:
        deps.hasher.close()

    ctx.background.append(keys_then_reload)
    ctx.background.append(deps.mailer.run)
    ctx.background.append(lambda: deps.reset_requests.run(partial(accounts.answer_reset_request, deps)))
    ctx.on_stop.append(close_hasher)
    return Built(IdentityServicer(deps), deps)
