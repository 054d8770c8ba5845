"""Platform-administrator workflows: list, read, disable and enable accounts, and the
bootstrap of the first administrator (`nexus admin create`)."""

from __future__ import annotations

from dataclasses import replace

from nexus_server.common import pagination
from nexus_server.common.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PreconditionViolation,
)
from nexus_server.common.ids import is_id
from nexus_server.common.validation import Violations
from nexus_server.identity import passwords, sessions, store, validation
from nexus_server.identity.deps import Identity

STATUSES = {"", "active", "disabled"}


def _user_id(value: str, field: str = "id") -> str:
    if not value:
        raise InvalidArgument(FieldViolation(field, "is required"))
    if not is_id(value, "usr"):
        raise InvalidArgument(FieldViolation(field, "must be a user id (usr_…)"))
    return value


async def list_users(
    deps: Identity, *, page_size: int, page_token: str, email: str, status: str
) -> tuple[list[store.UserRow], str]:
    with Violations() as bad:
        size = pagination.page_size(page_size, bad)
        validation.bounded(email, "email", validation.MAX_EMAIL, bad)
    filters = {"email": email.strip().lower(), "status": status}
    after = pagination.decode(page_token, "ListUsers", filters, (str,))
    async with deps.db.unit_of_work(readonly=True) as uow:
        rows = await store.list_users(
            uow.session,
            after_id=after[0] if after else "",
            email_contains=filters["email"],
            status=status,
            limit=size + 1,
        )
    return pagination.page(rows, size, "ListUsers", filters, lambda r: [r.id])


async def get_user(deps: Identity, user_id: str) -> store.UserRow:
    _user_id(user_id)
    async with deps.db.unit_of_work(readonly=True) as uow:
        user = await store.get_user(uow.session, user_id)
    if user is None:
        raise NotFound(f"no user has the id {user_id}")
    return user


async def disable_user(deps: Identity, *, admin_id: str, user_id: str, reason: str) -> store.UserRow:
    _user_id(user_id)
    with Violations() as bad:
        validation.bounded(reason, "reason", 500, bad)
    if user_id == admin_id:
        raise FailedPrecondition(
            "you cannot disable your own account",
            reason="CANNOT_DISABLE_SELF",
            violations=[PreconditionViolation("USER", user_id, "an administrator cannot disable themselves")],
        )
    async with deps.db.unit_of_work() as uow:
        user = await store.get_user(uow.session, user_id)
        if user is None:
            raise NotFound(f"no user has the id {user_id}")
        if user.status == "disabled":
            return user
        now = uow.clock.now()
        # The status UPDATE comes first: it takes the user's row lock, so a sign-in racing
        # with it either finishes before (and its session is ended below) or fails.
        await store.update_user(
            uow.session, user_id, status="disabled", disable_time=now, disable_reason=reason, update_time=now
        )
        await sessions.end_all(deps, uow, user_id, "user_disabled")
        await uow.append_event("user.disabled", {"user_id": user_id, "reason": reason}, subject=user_id)
        return replace(user, status="disabled", disable_time=now, disable_reason=reason, update_time=now)


async def enable_user(deps: Identity, *, user_id: str) -> store.UserRow:
    _user_id(user_id)
    async with deps.db.unit_of_work() as uow:
        user = await store.get_user(uow.session, user_id)
        if user is None:
            raise NotFound(f"no user has the id {user_id}")
        if user.status == "active":
            return user
        now = uow.clock.now()
        await store.update_user(
            uow.session, user_id, status="active", disable_time=None, disable_reason="", update_time=now
        )
        await uow.append_event("user.enabled", {"user_id": user_id}, subject=user_id)
        return replace(user, status="active", disable_time=None, disable_reason="", update_time=now)


async def create_admin(
    deps: Identity, *, email: str, password: str, display_name: str = ""
) -> tuple[str, bool]:
    """Make `email` a platform administrator, creating the account if needed (with
    `password`, which must meet the policy). Returns (user id, created)."""
    with Violations() as bad:
        address = validation.email(email, "email", bad)
    async with deps.db.unit_of_work() as uow:
        existing = await store.get_user_by_email(uow.session, address)
        if existing is not None:
            await store.update_user(
                uow.session, existing.id, platform_admin=True, update_time=uow.clock.now()
            )
            return existing.id, False
    passwords.check_policy(password, "password")
    with Violations() as bad:
        name = validation.display_name(display_name, "display_name", bad)
    password_hash = await deps.hasher.hash(password)
    async with deps.db.unit_of_work() as uow:
        now = uow.clock.now()
        user = store.new_user(
            email=address,
            password_hash=password_hash,
            display_name=name,
            now=now,
            email_verified=True,  # created by the operator, who vouches for the address
            platform_admin=True,
        )
        await store.insert_user(uow.session, user)
        await uow.append_event("user.registered", {"user_id": user.id, "email": address}, subject=user.id)
    return user.id, True
