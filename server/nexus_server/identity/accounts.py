"""Accounts: register, sign in, profile, password changes and resets, email verification.

Each workflow opens the units of work it needs: sign-in failures, and sessions ended for a
reused refresh token, must commit even though the call then fails.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from nexus_server.common import pagination
from nexus_server.common.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    PreconditionViolation,
    ResourceExhausted,
    Unauthenticated,
)
from nexus_server.common.validation import Violations
from nexus_server.db.uow import UnitOfWork
from nexus_server.identity import onetime, passwords, sessions, store, totp, validation
from nexus_server.identity.deps import Client, Identity
from nexus_server.identity.sessions import TokenPair

RESEND_AFTER = timedelta(minutes=1)


def _invalid_credentials() -> Unauthenticated:
    # One message for unknown email and wrong password alike.
    return Unauthenticated("the email or password is not right", reason="INVALID_CREDENTIALS")


async def _queue_verification(deps: Identity, uow: UnitOfWork, user: store.UserRow) -> None:
    token = await onetime.issue(uow, user, onetime.VERIFY_EMAIL)
    link = f"{deps.settings.public_url}/verify-email?token={token}"
    await deps.mailer.queue(
        uow,
        user.email,
        "Verify your email for Nexus",
        f"Confirm that this is your email address by opening this link within an hour:\n\n{link}\n\n"
        f"Or send this token to VerifyEmail: {token}\n",
    )


async def register(
    deps: Identity, *, email: str, password: str, display_name: str, client: Client
) -> tuple[store.UserRow, TokenPair]:
    with Violations() as bad:
        address = validation.email(email, "email", bad)
        name = validation.display_name(display_name, "display_name", bad)
    passwords.check_policy(password, "password")
    # Counted before the hash: a bcrypt run is the costliest thing an anonymous caller can ask.
    await deps.throttle.admit_signup(client.ip_address)
    password_hash = await deps.hasher.hash(password)
    await deps.keys.ready()
    async with deps.db.unit_of_work() as uow:
        now = uow.clock.now()
        user = store.new_user(email=address, password_hash=password_hash, display_name=name, now=now)
        if not await store.insert_user(uow.session, user):
            raise AlreadyExists("an account with this email already exists", reason="EMAIL_TAKEN")
        await uow.append_event("user.registered", {"user_id": user.id, "email": address}, subject=user.id)
        await _queue_verification(deps, uow, user)
        pair = await sessions.start(deps, uow, user, client, "", ())
        await store.record_login(uow.session, user.id, now)
        user = replace(user, last_login_time=now)
    return user, pair


async def login(
    deps: Identity, *, email: str, password: str, totp_code: str, tenant_id: str, client: Client
) -> tuple[store.UserRow, TokenPair]:
    with Violations() as bad:
        address = validation.email(email, "email", bad)
        if not password:
            bad.add("password", "is required")
        if len(totp_code) > totp.MAX_CODE_CHARS:
            bad.add("totp_code", f"must be at most {totp.MAX_CODE_CHARS} characters")
        if len(tenant_id) > 64:
            bad.add("tenant_id", "must be at most 64 characters")
    passwords.check_length(password, "password")

    # Two transactions on the usual path: count the attempt and read the user; then, once the
    # password proves right, clear the count and start the session.
    async with deps.db.unit_of_work() as uow:
        user = await store.get_user_by_email(uow.session, address)
        # Looked up for unknown emails too (as user ""), so both cost the same.
        known = await store.knows_device(uow.session, user.id if user else "", sessions.device_hash(client))
        ticket = await deps.throttle.admit_in(uow, address, client.ip_address, known_device=known)
    if not await deps.hasher.verify(password, user.password_hash if user else None) or user is None:
        raise _invalid_credentials()
    if user.status != "active":
        # Exactly a wrong password, counted as one: otherwise a guesser learns the password
        # of a disabled account, and that the account exists.
        raise _invalid_credentials()
    if user.totp_secret is not None:
        if not totp_code:
            await deps.throttle.forgive(ticket)
            raise Unauthenticated("enter the code from your authenticator app", reason="TOTP_REQUIRED")
        async with deps.db.unit_of_work() as uow:
            accepted = await totp.accept_code(uow, deps.totp_sealer, user, totp_code)
        if not accepted:
            raise Unauthenticated("the authentication code is not right", reason="TOTP_INVALID")
    await deps.keys.ready()
    try:
        async with deps.db.unit_of_work() as uow:
            now = uow.clock.now()
            holder = sessions.Holder(user.id, user.platform_admin)
            active_tenant, roles = await sessions.choose_tenant(
                deps, uow, holder, tenant_id, default_only=True
            )
            pair = await sessions.start(deps, uow, user, client, active_tenant, roles)
            if not await store.record_login(uow.session, user.id, now):
                raise _invalid_credentials()  # disabled meanwhile: the rollback keeps the count
            # Last, so the hot per-address row is locked only until the commit just after.
            await deps.throttle.succeeded_in(uow, ticket)
    except PermissionDenied:
        # The password was right (a tenant refused, or the account was just disabled): the
        # rollback took the clearing with it, so clear on its own.
        await deps.throttle.succeeded(ticket)
        raise
    return replace(user, last_login_time=now), pair


async def refresh(deps: Identity, *, refresh_token: str, tenant_id: str) -> TokenPair:
    with Violations() as bad:
        validation.required(refresh_token, "refresh_token", 128, bad)
        validation.bounded(tenant_id, "tenant_id", 64, bad)
    await deps.keys.ready()
    async with deps.db.unit_of_work() as uow:
        result = await sessions.refresh(deps, uow, refresh_token, tenant_id)
    if result.pair is None:
        raise Unauthenticated(
            "this refresh token was already used, so its session has been ended; sign in again",
            reason="REFRESH_TOKEN_REUSED",
        )
    return result.pair


async def logout(deps: Identity, *, user_id: str, session_id: str, all_sessions: bool) -> int:
    async with deps.db.unit_of_work() as uow:
        if all_sessions:
            return await sessions.end_all(deps, uow, user_id, "logout")
        return await sessions.end(deps, uow, [session_id], "logout")


async def current_user(deps: Identity, user_id: str) -> store.UserRow:
    async with deps.db.unit_of_work(readonly=True) as uow:
        user = await store.get_user(uow.session, user_id)
    if user is None:
        raise NotFound("your account no longer exists")
    return user


async def update_profile(deps: Identity, user_id: str, *, display_name: str | None) -> store.UserRow:
    """Change the named fields (today only the display name); None leaves it as it is."""
    with Violations() as bad:
        name = validation.display_name(display_name or "", "user.display_name", bad)
    async with deps.db.unit_of_work() as uow:
        if display_name is not None:
            await store.update_user(uow.session, user_id, display_name=name, update_time=uow.clock.now())
        user = await store.get_user(uow.session, user_id)
    if user is None:
        raise NotFound("your account no longer exists")
    return user


async def confirm_password(deps: Identity, user: store.UserRow, password: str, field: str) -> None:
    """Check a password re-entered to confirm a sensitive change; wrong ones count as failed
    sign-ins for the user, so a stolen access token cannot be used to guess it."""
    if not password:
        raise InvalidArgument(FieldViolation(field, "is required"))
    passwords.check_length(password, field)
    ticket = await deps.throttle.admit(user.email)
    if not await deps.hasher.verify(password, user.password_hash):
        raise InvalidArgument(FieldViolation(field, "is not your password"), reason="PASSWORD_INCORRECT")
    await deps.throttle.succeeded(ticket)


async def change_password(
    deps: Identity, *, user_id: str, session_id: str, current_password: str, new_password: str
) -> int:
    if not new_password:
        raise InvalidArgument(FieldViolation("new_password", "is required"))
    passwords.check_policy(new_password, "new_password")
    user = await current_user(deps, user_id)
    await confirm_password(deps, user, current_password, "current_password")
    password_hash = await deps.hasher.hash(new_password)
    async with deps.db.unit_of_work() as uow:
        await store.update_user(
            uow.session, user_id, password_hash=password_hash, update_time=uow.clock.now()
        )
        ended = await sessions.end_all(deps, uow, user_id, "password_changed", keep=session_id)
        await uow.append_event(
            "user.password_changed", {"user_id": user_id, "reason": "change"}, subject=user_id
        )
    return ended


async def request_password_reset(deps: Identity, *, email: str) -> None:
    """Queue a reset for the email, known or not: the same answer, and the same work, either
    way (the lookup happens later, in `answer_reset_request`)."""
    with Violations() as bad:
        address = validation.email(email, "email", bad)
    async with deps.db.unit_of_work() as uow:
        await deps.reset_requests.queue(uow, address)


async def answer_reset_request(deps: Identity, uow: UnitOfWork, email: str) -> None:
    """Mail a reset link if the email has an active account (in the background)."""
    user = await store.get_user_by_email(uow.session, email)
    if user is None or user.status != "active":
        return
    if await onetime.recently_issued(uow, user.id, onetime.RESET_PASSWORD, RESEND_AFTER):
        return
    token = await onetime.issue(uow, user, onetime.RESET_PASSWORD)
    link = f"{deps.settings.public_url}/reset-password?token={token}"
    await deps.mailer.queue(
        uow,
        user.email,
        "Reset your Nexus password",
        "Someone asked to reset the password of your Nexus account. If it was you, open this "
        f"link within an hour:\n\n{link}\n\nOr send this token to ResetPassword: {token}\n\n"
        "If it was not you, ignore this email; your password has not changed.\n",
    )


async def reset_password(deps: Identity, *, token: str, new_password: str) -> None:
    onetime.check_shape(token)
    if not new_password:
        raise InvalidArgument(FieldViolation("new_password", "is required"))
    passwords.check_policy(new_password, "new_password")
    # A made-up or spent token is refused before the hash: it costs a read, not a bcrypt run.
    async with deps.db.unit_of_work(readonly=True) as uow:
        await onetime.check(uow, token, onetime.RESET_PASSWORD)
    password_hash = await deps.hasher.hash(new_password)
    async with deps.db.unit_of_work() as uow:
        row = await onetime.redeem(uow, token, onetime.RESET_PASSWORD)
        await store.update_user(
            uow.session, row.user_id, password_hash=password_hash, update_time=uow.clock.now()
        )
        await sessions.end_all(deps, uow, row.user_id, "password_reset")
        await uow.append_event(
            "user.password_changed", {"user_id": row.user_id, "reason": "reset"}, subject=row.user_id
        )
        email = row.email
    await deps.throttle.clear(email)


async def verify_email(deps: Identity, *, token: str) -> store.UserRow:
    onetime.check_shape(token)
    async with deps.db.unit_of_work() as uow:
        row = await onetime.redeem(uow, token, onetime.VERIFY_EMAIL)
        await store.update_user(uow.session, row.user_id, email_verified=True, update_time=uow.clock.now())
        await uow.append_event(
            "user.email_verified", {"user_id": row.user_id, "email": row.email}, subject=row.user_id
        )
        user = await store.get_user(uow.session, row.user_id)
    if user is None:
        raise NotFound("the account of this link no longer exists")
    return user


async def send_verification_email(deps: Identity, user_id: str) -> None:
    async with deps.db.unit_of_work() as uow:
        user = await store.get_user(uow.session, user_id)
        if user is None:
            raise NotFound("your account no longer exists")
        if user.email_verified:
            raise FailedPrecondition(
                "your email is already verified",
                reason="EMAIL_ALREADY_VERIFIED",
                violations=[PreconditionViolation("EMAIL", user.email, "already verified")],
            )
        if await onetime.recently_issued(uow, user.id, onetime.VERIFY_EMAIL, RESEND_AFTER):
            raise ResourceExhausted(
                "a verification email was sent less than a minute ago", retry_after=RESEND_AFTER
            )
        await _queue_verification(deps, uow, user)


async def list_sessions(
    deps: Identity, *, user_id: str, page_size: int, page_token: str
) -> tuple[list[store.SessionRow], str]:
    with Violations() as bad:
        size = pagination.page_size(page_size, bad)
    query = {"user_id": user_id}
    before = pagination.decode(page_token, "ListSessions", query, (str,))
    async with deps.db.unit_of_work(readonly=True) as uow:
        rows = await store.active_sessions(
            uow.session, user_id, uow.clock.now(), before_id=before[0] if before else "", limit=size + 1
        )
    return pagination.page(rows, size, "ListSessions", query, lambda r: [r.id])


async def revoke_session(deps: Identity, *, user_id: str, session_id: str) -> None:
    with Violations() as bad:
        validation.required(session_id, "session_id", 64, bad)
    async with deps.db.unit_of_work() as uow:
        row = await store.get_session(uow.session, session_id)
        if (
            row is None
            or row.user_id != user_id
            or row.end_time is not None
            or row.expire_time <= uow.clock.now()
        ):
            raise NotFound(f"you have no active session {session_id}")
        await sessions.end(deps, uow, [session_id], "revoked")
