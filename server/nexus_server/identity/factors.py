"""Enrolling, confirming and disabling the TOTP second factor."""

from __future__ import annotations

from datetime import datetime

from nexus_server.common.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    PreconditionViolation,
)
from nexus_server.identity import accounts, store, totp
from nexus_server.identity.deps import Identity
from nexus_server.identity.digests import digest


def _precondition(message: str, reason: str) -> FailedPrecondition:
    return FailedPrecondition(
        message, reason=reason, violations=[PreconditionViolation("TOTP", "totp", message)]
    )


def _code(code: str) -> str:
    if not code:
        raise InvalidArgument(FieldViolation("code", "is required"))
    if len(code) > totp.MAX_CODE_CHARS:
        raise InvalidArgument(FieldViolation("code", f"must be at most {totp.MAX_CODE_CHARS} characters"))
    return code


def _wrong_code() -> InvalidArgument:
    return InvalidArgument(FieldViolation("code", "is not a valid code now"), reason="TOTP_INVALID")


async def enroll(deps: Identity, *, user_id: str, password: str) -> tuple[str, str, datetime]:
    """A new pending secret: (secret, otpauth URI, when the enrollment lapses)."""
    user = await accounts.current_user(deps, user_id)
    if user.totp_secret is not None:
        raise _precondition("TOTP is already enabled; disable it first", "TOTP_ALREADY_ENABLED")
    await accounts.confirm_password(deps, user, password, "password")
    secret = totp.new_secret()
    async with deps.db.unit_of_work() as uow:
        expire = uow.clock.now() + totp.PENDING_FOR
        await store.update_user(
            uow.session,
            user_id,
            totp_pending_secret=deps.totp_sealer.seal(secret.encode()),
            totp_pending_expire_time=expire,
        )
    return secret, totp.otpauth_uri(secret, user.email), expire


async def confirm(deps: Identity, *, user_id: str, code: str) -> tuple[list[str], store.UserRow]:
    _code(code)
    async with deps.db.unit_of_work() as uow:
        now = uow.clock.now()
        user = await store.get_user(uow.session, user_id)
        assert user is not None
        if user.totp_secret is not None:
            raise _precondition("TOTP is already enabled", "TOTP_ALREADY_ENABLED")
        pending = user.totp_pending_secret
        if pending is None or user.totp_pending_expire_time is None or user.totp_pending_expire_time <= now:
            raise _precondition("no pending TOTP enrollment; call EnrollTotp first", "TOTP_NOT_ENROLLED")
        step = totp.matching_step(deps.totp_sealer.open(pending).decode(), code, now)
        if step is None:
            raise _wrong_code()
        codes = totp.new_recovery_codes()
        await store.update_user(
            uow.session,
            user_id,
            totp_secret=pending,
            totp_pending_secret=None,
            totp_pending_expire_time=None,
            totp_last_step=step,
            update_time=now,
        )
        await store.replace_recovery_codes(
            uow.session, user_id, [digest(totp.normalise_recovery(c)) for c in codes]
        )
        updated = await store.get_user(uow.session, user_id)
    assert updated is not None
    return codes, updated


async def disable(deps: Identity, *, user_id: str, code: str) -> store.UserRow:
    _code(code)
    user = await accounts.current_user(deps, user_id)
    if user.totp_secret is None:
        raise _precondition("TOTP is not enabled", "TOTP_NOT_ENABLED")
    ticket = await deps.throttle.admit(user.email)
    async with deps.db.unit_of_work() as uow:
        accepted = await totp.accept_code(uow, deps.totp_sealer, user, code)
    if not accepted:
        raise _wrong_code()
    await deps.throttle.succeeded(ticket)
    async with deps.db.unit_of_work() as uow:
        await store.update_user(
            uow.session,
            user_id,
            totp_secret=None,
            totp_pending_secret=None,
            totp_pending_expire_time=None,
            totp_last_step=None,
            update_time=uow.clock.now(),
        )
        await store.replace_recovery_codes(uow.session, user_id, [])
        updated = await store.get_user(uow.session, user_id)
    assert updated is not None
    return updated
