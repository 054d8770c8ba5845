"""Sign-in, rotating refresh tokens, reuse detection, logout and session management."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from nexus.identity.v1 import identity_service_pb2 as pb
from nexus.identity.v1 import identity_service_pb2_grpc as rpc
from nexus.identity.v1 import user_pb2
from nexus_server.app.server import NexusServer, create_server
from nexus_server.config import Settings
from tests.support import make_tenant, register_user


def stub(channel: grpc.aio.Channel) -> rpc.IdentityServiceStub:
    return rpc.IdentityServiceStub(channel)


def reason(error: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(error)
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return str(info.reason)
    return ""


async def refused(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value


async def me(channel: grpc.aio.Channel, access_token: str) -> str:
    user: user_pb2.User = await stub(channel).GetCurrentUser(
        pb.GetCurrentUserRequest(), metadata=(("authorization", f"Bearer {access_token}"),)
    )
    return user.id


async def test_login_starts_a_new_session_with_working_tokens(channel: grpc.aio.Channel) -> None:
    user = await register_user(channel)
    response = await stub(channel).Login(pb.LoginRequest(email=user.email, password=user.password))
    assert response.session_id != user.session_id
    assert response.token_type == "Bearer" and response.expires_in == 900
    assert await me(channel, response.access_token) == user.user_id


async def test_wrong_password_and_unknown_email_look_the_same(channel: grpc.aio.Channel) -> None:
    user = await register_user(channel)
    wrong = await refused(stub(channel).Login(pb.LoginRequest(email=user.email, password="Wrong-pass-123!")))
    unknown = await refused(
        stub(channel).Login(pb.LoginRequest(email="nobody-" + user.email, password=user.password))
    )
    assert (wrong.code(), reason(wrong), wrong.details()) == (
        unknown.code(),
        reason(unknown),
        unknown.details(),
    )
    assert reason(wrong) == "INVALID_CREDENTIALS"


async def test_refresh_rotates_and_the_old_token_is_spent(channel: grpc.aio.Channel) -> None:
    user = await register_user(channel)
    first = await stub(channel).RefreshToken(pb.RefreshTokenRequest(refresh_token=user.refresh_token))
    assert first.refresh_token != user.refresh_token and first.session_id == user.session_id
    second = await stub(channel).RefreshToken(pb.RefreshTokenRequest(refresh_token=first.refresh_token))
    assert await me(channel, second.access_token) == user.user_id


async def test_a_retry_of_the_immediate_predecessor_gets_the_current_pair(channel: grpc.aio.Channel) -> None:
    user = await register_user(channel)
    first = await stub(channel).RefreshToken(pb.RefreshTokenRequest(refresh_token=user.refresh_token))
    retry = await stub(channel).RefreshToken(pb.RefreshTokenRequest(refresh_token=user.refresh_token))
    assert retry.refresh_token == first.refresh_token


async def test_concurrent_refreshes_with_one_token_agree_on_the_successor(channel: grpc.aio.Channel) -> None:
    user = await register_user(channel)
    answers = await asyncio.gather(
        *(
            stub(channel).RefreshToken(pb.RefreshTokenRequest(refresh_token=user.refresh_token))
            for _ in range(5)
        )
    )
    assert len({a.refresh_token for a in answers}) == 1


async def test_reusing_a_spent_refresh_token_revokes_the_session(
    channel: grpc.aio.Channel, server: tuple[NexusServer, int]
) -> None:
    user = await register_user(channel)
    first = await stub(channel).RefreshToken(pb.RefreshTokenRequest(refresh_token=user.refresh_token))
    second = await stub(channel).RefreshToken(pb.RefreshTokenRequest(refresh_token=first.refresh_token))
    # The first token is now two rotations old: not a retry, a replay.
    error = await refused(
        stub(channel).RefreshToken(pb.RefreshTokenRequest(refresh_token=user.refresh_token))
    )
    assert (error.code(), reason(error)) == (grpc.StatusCode.UNAUTHENTICATED, "REFRESH_TOKEN_REUSED")
    after = await refused(
        stub(channel).RefreshToken(pb.RefreshTokenRequest(refresh_token=second.refresh_token))
    )
    assert reason(after) == "REFRESH_TOKEN_INVALID"
    denied = await refused(me(channel, second.access_token))
    assert denied.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_reuse_publishes_session_revoked_with_its_reason(
    channel: grpc.aio.Channel, server: tuple[NexusServer, int]
) -> None:
    from sqlalchemy import select

    from nexus_server.db.schema import events

    user = await register_user(channel)
    first = await stub(channel).RefreshToken(pb.RefreshTokenRequest(refresh_token=user.refresh_token))
    await stub(channel).RefreshToken(pb.RefreshTokenRequest(refresh_token=first.refresh_token))
    await refused(stub(channel).RefreshToken(pb.RefreshTokenRequest(refresh_token=user.refresh_token)))
    async with server[0].db.unit_of_work(readonly=True) as uow:
        rows = (
            await uow.session.execute(
                select(events.c.data).where(
                    events.c.type == "session.revoked", events.c.subject == user.user_id
                )
            )
        ).all()
    assert [r.data["reason"] for r in rows] == ["refresh_token_reuse"]


async def test_replaying_a_token_many_rotations_old_revokes_the_session(channel: grpc.aio.Channel) -> None:
    user = await register_user(channel)
    token = user.refresh_token
    for _ in range(5):
        token = (await stub(channel).RefreshToken(pb.RefreshTokenRequest(refresh_token=token))).refresh_token
    error = await refused(
        stub(channel).RefreshToken(pb.RefreshTokenRequest(refresh_token=user.refresh_token))
    )
    assert reason(error) == "REFRESH_TOKEN_REUSED"
    after = await refused(stub(channel).RefreshToken(pb.RefreshTokenRequest(refresh_token=token)))
    assert reason(after) == "REFRESH_TOKEN_INVALID"


async def test_a_made_up_token_naming_a_real_session_is_invalid_and_ends_nothing(
    channel: grpc.aio.Channel,
) -> None:
    user = await register_user(channel)
    _, secret, tag = user.refresh_token[len("nxr_") :].split(".")
    for forged in (
        f"nxr_{user.session_id}.{'A' * len(secret)}.{tag}",
        f"nxr_{user.session_id}.{secret}.{'A' * len(tag)}",
    ):
        error = await refused(stub(channel).RefreshToken(pb.RefreshTokenRequest(refresh_token=forged)))
        assert reason(error) == "REFRESH_TOKEN_INVALID"
    rotated = await stub(channel).RefreshToken(pb.RefreshTokenRequest(refresh_token=user.refresh_token))
    assert rotated.session_id == user.session_id


async def test_an_unknown_refresh_token_is_invalid(channel: grpc.aio.Channel) -> None:
    error = await refused(stub(channel).RefreshToken(pb.RefreshTokenRequest(refresh_token="nxr_" + "x" * 43)))
    assert reason(error) == "REFRESH_TOKEN_INVALID"


async def test_logout_ends_the_session_and_its_tokens(channel: grpc.aio.Channel) -> None:
    user = await register_user(channel)
    out = await stub(channel).Logout(pb.LogoutRequest(), metadata=user.metadata())
    assert out.revoked_session_count == 1
    assert (await refused(me(channel, user.access_token))).code() == grpc.StatusCode.UNAUTHENTICATED
    error = await refused(
        stub(channel).RefreshToken(pb.RefreshTokenRequest(refresh_token=user.refresh_token))
    )
    assert reason(error) == "REFRESH_TOKEN_INVALID"


async def test_logout_of_all_sessions_ends_every_device(channel: grpc.aio.Channel) -> None:
    user = await register_user(channel)
    other = await stub(channel).Login(pb.LoginRequest(email=user.email, password=user.password))
    out = await stub(channel).Logout(pb.LogoutRequest(all_sessions=True), metadata=user.metadata())
    assert out.revoked_session_count == 2
    assert (await refused(me(channel, other.access_token))).code() == grpc.StatusCode.UNAUTHENTICATED


async def test_list_sessions_marks_the_current_one_and_revoke_ends_another(channel: grpc.aio.Channel) -> None:
    user = await register_user(channel)
    other = await stub(channel).Login(
        pb.LoginRequest(email=user.email, password=user.password),
        metadata=(("x-forwarded-for", "203.0.113.7"),),
    )
    listed = await stub(channel).ListSessions(pb.ListSessionsRequest(), metadata=user.metadata())
    assert [s.id for s in listed.sessions] == [other.session_id, user.session_id]
    assert [s.current for s in listed.sessions] == [False, True]
    assert listed.sessions[0].ip_address == "203.0.113.7"
    assert listed.sessions[0].user_agent.startswith("grpc-python")  # grpc sets its own
    await stub(channel).RevokeSession(
        pb.RevokeSessionRequest(session_id=other.session_id), metadata=user.metadata()
    )
    assert (await refused(me(channel, other.access_token))).code() == grpc.StatusCode.UNAUTHENTICATED
    again = await refused(
        stub(channel).RevokeSession(
            pb.RevokeSessionRequest(session_id=other.session_id), metadata=user.metadata()
        )
    )
    assert again.code() == grpc.StatusCode.NOT_FOUND


async def test_another_users_session_cannot_be_revoked(channel: grpc.aio.Channel) -> None:
    alice, bob = await register_user(channel), await register_user(channel)
    error = await refused(
        stub(channel).RevokeSession(
            pb.RevokeSessionRequest(session_id=bob.session_id), metadata=alice.metadata()
        )
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert await me(channel, bob.access_token) == bob.user_id


async def test_login_picks_the_only_tenant_and_carries_its_roles(
    channel: grpc.aio.Channel, server: tuple[NexusServer, int]
) -> None:
    import jwt

    user = await register_user(channel)
    tenant = await make_tenant(server[0], user.user_id)
    response = await stub(channel).Login(pb.LoginRequest(email=user.email, password=user.password))
    claims = jwt.decode(response.access_token, options={"verify_signature": False})
    assert (response.tenant_id, claims["tid"], claims["roles"]) == (tenant, tenant, ["owner"])
    assert isinstance(claims["projects"], dict)


async def test_login_into_a_tenant_the_user_is_not_in_is_denied(
    channel: grpc.aio.Channel, server: tuple[NexusServer, int]
) -> None:
    owner, stranger = await register_user(channel), await register_user(channel)
    tenant = await make_tenant(server[0], owner.user_id)
    error = await refused(
        stub(channel).Login(
            pb.LoginRequest(email=stranger.email, password=stranger.password, tenant_id=tenant)
        )
    )
    assert (error.code(), reason(error)) == (grpc.StatusCode.PERMISSION_DENIED, "TENANT_ACCESS_DENIED")


async def test_refresh_can_switch_the_active_tenant(
    channel: grpc.aio.Channel, server: tuple[NexusServer, int]
) -> None:
    user = await register_user(channel)
    tenant = await make_tenant(server[0], user.user_id)
    switched = await stub(channel).RefreshToken(
        pb.RefreshTokenRequest(refresh_token=user.refresh_token, tenant_id=tenant)
    )
    assert switched.tenant_id == tenant


async def test_change_password_keeps_this_session_and_ends_the_others(channel: grpc.aio.Channel) -> None:
    user = await register_user(channel)
    other = await stub(channel).Login(pb.LoginRequest(email=user.email, password=user.password))
    changed = await stub(channel).ChangePassword(
        pb.ChangePasswordRequest(current_password=user.password, new_password="Another-Horse-7-Staple"),
        metadata=user.metadata(),
    )
    assert changed.revoked_session_count == 1
    assert await me(channel, user.access_token) == user.user_id
    assert (await refused(me(channel, other.access_token))).code() == grpc.StatusCode.UNAUTHENTICATED
    await stub(channel).Login(pb.LoginRequest(email=user.email, password="Another-Horse-7-Staple"))


async def test_change_password_with_a_wrong_current_password_is_refused(channel: grpc.aio.Channel) -> None:
    user = await register_user(channel)
    error = await refused(
        stub(channel).ChangePassword(
            pb.ChangePasswordRequest(
                current_password="Not-the-one-123!", new_password="Another-Horse-7-Staple"
            ),
            metadata=user.metadata(),
        )
    )
    assert (error.code(), reason(error)) == (grpc.StatusCode.INVALID_ARGUMENT, "PASSWORD_INCORRECT")


async def test_update_current_user_changes_the_display_name(channel: grpc.aio.Channel) -> None:
    from google.protobuf import field_mask_pb2

    from nexus.identity.v1 import user_pb2

    user = await register_user(channel)
    updated = await stub(channel).UpdateCurrentUser(
        pb.UpdateCurrentUserRequest(
            user=user_pb2.User(display_name="  New Name "),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        ),
        metadata=user.metadata(),
    )
    assert updated.display_name == "New Name"
    error = await refused(
        stub(channel).UpdateCurrentUser(
            pb.UpdateCurrentUserRequest(
                user=user_pb2.User(), update_mask=field_mask_pb2.FieldMask(paths=["email"])
            ),
            metadata=user.metadata(),
        )
    )
    assert reason(error) == "UPDATE_MASK_INVALID"


async def test_x_forwarded_for_is_believed_only_from_a_trusted_proxy(settings: Settings) -> None:
    """A caller reaching Nexus directly cannot name its own address (and so dodge the
    per-address sign-in limits): with no trusted proxies, a session records the peer."""
    srv, port = await create_server(replace(settings, trusted_proxies="none"))
    await srv.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as direct:
            user = await register_user(direct)
            await stub(direct).Login(
                pb.LoginRequest(email=user.email, password=user.password),
                metadata=(("x-forwarded-for", "203.0.113.9"),),
            )
            listed = await stub(direct).ListSessions(pb.ListSessionsRequest(), metadata=user.metadata())
    finally:
        await srv.stop(grace=1)
    assert {s.ip_address for s in listed.sessions} == {"127.0.0.1"}
