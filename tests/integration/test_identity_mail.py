"""Email flows: verification and password reset links, through a real SMTP server and the
development sink."""

from __future__ import annotations

import asyncio
import contextvars
import email
import uuid
from collections.abc import Awaitable
from email.policy import default
from typing import Any

import grpc
import pytest
from sqlalchemy import event

from nexus.identity.v1 import identity_service_pb2 as pb
from nexus.identity.v1 import identity_service_pb2_grpc as rpc
from nexus_server.app.server import NexusServer
from nexus_server.identity import accounts
from tests.support import PASSWORD, Inbox, register_user, token_in, unique


async def test_register_verify_login_refresh_logout(smtp_server: tuple[grpc.aio.Channel, Inbox]) -> None:
    channel, inbox = smtp_server
    identity = rpc.IdentityServiceStub(channel)
    address = f"{unique('flow')}@example.com"
    registered = await identity.Register(pb.RegisterRequest(email=address, password=PASSWORD))
    assert not registered.user.email_verified
    token = token_in(await inbox.wait_for(address, "Verify"))
    verified = await identity.VerifyEmail(pb.VerifyEmailRequest(token=token))
    assert (verified.user_id, verified.email) == (registered.user.id, address)
    login = await identity.Login(pb.LoginRequest(email=address, password=PASSWORD))
    assert login.user.email_verified
    refreshed = await identity.RefreshToken(pb.RefreshTokenRequest(refresh_token=login.refresh_token))
    bearer = (("authorization", f"Bearer {refreshed.access_token}"),)
    assert (await identity.Logout(pb.LogoutRequest(), metadata=bearer)).revoked_session_count == 1
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await identity.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=bearer)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_verification_token_works_once(smtp_server: tuple[grpc.aio.Channel, Inbox]) -> None:
    channel, inbox = smtp_server
    identity = rpc.IdentityServiceStub(channel)
    user = await register_user(channel)
    token = token_in(await inbox.wait_for(user.email, "Verify"))
    await identity.VerifyEmail(pb.VerifyEmailRequest(token=token))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await identity.VerifyEmail(pb.VerifyEmailRequest(token=token))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_password_reset_sets_the_password_and_ends_every_session(
    smtp_server: tuple[grpc.aio.Channel, Inbox],
) -> None:
    channel, inbox = smtp_server
    identity = rpc.IdentityServiceStub(channel)
    user = await register_user(channel)
    await identity.RequestPasswordReset(pb.RequestPasswordResetRequest(email=user.email))
    token = token_in(await inbox.wait_for(user.email, "Reset"))
    await identity.ResetPassword(pb.ResetPasswordRequest(token=token, new_password="Brand-New-Pass-42"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await identity.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=user.metadata())
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    await identity.Login(pb.LoginRequest(email=user.email, password="Brand-New-Pass-42"))
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await identity.ResetPassword(pb.ResetPasswordRequest(token=token, new_password="Another-New-Pass-43"))
    assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_reset_for_an_unknown_email_answers_the_same_and_sends_nothing(
    smtp_server: tuple[grpc.aio.Channel, Inbox],
) -> None:
    channel, inbox = smtp_server
    answer = await rpc.IdentityServiceStub(channel).RequestPasswordReset(
        pb.RequestPasswordResetRequest(email="nobody-here@example.com")
    )
    assert answer == pb.RequestPasswordResetResponse()
    await asyncio.sleep(0.3)
    assert not [m for m in inbox.messages if m["To"] == "nobody-here@example.com"]


async def test_the_dev_sink_writes_eml_files(
    channel: grpc.aio.Channel, server: tuple[NexusServer, int]
) -> None:
    user = await register_user(channel)
    sink = server[0].settings.var_dir / "mail"
    for _ in range(200):
        found = (
            [
                p
                for p in sink.glob("*.eml")
                if email.message_from_bytes(p.read_bytes(), policy=default)["To"] == user.email
            ]
            if sink.exists()
            else []
        )
        if found:
            break
        await asyncio.sleep(0.05)
    assert found, "no .eml for the new account"


async def test_a_new_device_is_noticed_once_and_a_known_one_never(
    smtp_server: tuple[grpc.aio.Channel, Inbox],
) -> None:
    channel, inbox = smtp_server
    identity = rpc.IdentityServiceStub(channel)
    address = f"{unique('device')}@example.com"
    await identity.Register(pb.RegisterRequest(email=address, password=PASSWORD))

    def login_from(ip: str) -> Awaitable[pb.LoginResponse]:
        metadata = (("x-forwarded-for", ip),) if ip else ()
        call: Awaitable[pb.LoginResponse] = identity.Login(
            pb.LoginRequest(email=address, password=PASSWORD), metadata=metadata
        )
        return call

    await login_from("")  # the device that registered: known
    await login_from("203.0.113.7")  # new: noticed
    await login_from("203.0.113.7")  # known now
    await login_from("198.51.100.4")  # new: noticed
    # The outbox sends in order: once the last notice arrives, any earlier one has too.
    last = await inbox.wait_for(address, "New sign-in")
    for _ in range(100):
        notices = [m for m in inbox.messages if m["To"] == address and "New sign-in" in m["Subject"]]
        if any("198.51.100.4" in m.get_body(("plain",)).get_content() for m in notices):  # type: ignore[union-attr]
            break
        await asyncio.sleep(0.05)
    assert last is not None
    bodies = [m.get_body(("plain",)).get_content() for m in notices]  # type: ignore[union-attr]
    assert len(bodies) == 2, bodies
    assert "203.0.113.7" in bodies[0] and "198.51.100.4" in bodies[1]


async def test_a_reset_request_does_the_same_work_for_known_and_unknown_emails(
    channel: grpc.aio.Channel, server: tuple[NexusServer, int]
) -> None:
    """The request's timing told known emails from unknown ones (10.5 vs 4.3 ms): it now
    runs the very same statements for both, and the lookup waits for the background task.
    Statements are recorded only from this task's context, not the background answerer's."""
    deps = server[0].capabilities.identity
    user = await register_user(channel)
    recording: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("recording", default=None)

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen = recording.get()
        if seen is not None:
            seen.append(statement)

    engine = deps.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        work = {}
        for email in (user.email, f"nobody-{uuid.uuid4().hex}@example.com"):
            recording.set([])
            await accounts.request_password_reset(deps, email=email)
            work[email] = recording.get()
            recording.set(None)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    known, unknown = work.values()
    assert known and known == unknown
    assert not any("users" in statement for statement in known)
