"""Platform-administrator RPCs, and disabling an account everywhere."""

from __future__ import annotations

import grpc
import pytest

from nexus.identity.v1 import identity_service_pb2 as pb
from nexus.identity.v1 import identity_service_pb2_grpc as rpc
from nexus.identity.v1 import user_pb2
from nexus_server.app.server import NexusServer
from tests.support import PASSWORD, User, field_violations, reason, register_user, unique


async def admin_user(channel: grpc.aio.Channel, server: NexusServer) -> User:
    from nexus_server.identity.admin import create_admin

    email = f"{unique('admin')}@example.com"
    await create_admin(server.capabilities.identity, email=email, password=PASSWORD)
    login = await rpc.IdentityServiceStub(channel).Login(pb.LoginRequest(email=email, password=PASSWORD))
    return User(login.user.id, email, PASSWORD, login.access_token, login.refresh_token, login.session_id)


async def test_a_non_admin_cannot_list_users(channel: grpc.aio.Channel) -> None:
    user = await register_user(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await rpc.IdentityServiceStub(channel).ListUsers(pb.ListUsersRequest(), metadata=user.metadata())
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_list_users_pages_through_a_filter(
    channel: grpc.aio.Channel, server: tuple[NexusServer, int]
) -> None:
    admin = await admin_user(channel, server[0])
    tag = unique("page")
    made = [await register_user(channel, email=f"{tag}-{n}@example.com") for n in range(3)]
    identity = rpc.IdentityServiceStub(channel)
    first = await identity.ListUsers(pb.ListUsersRequest(page_size=2, email=tag), metadata=admin.metadata())
    second = await identity.ListUsers(
        pb.ListUsersRequest(page_size=2, email=tag, page_token=first.next_page_token),
        metadata=admin.metadata(),
    )
    assert [u.id for u in [*first.users, *second.users]] == [u.user_id for u in made]
    assert second.next_page_token == ""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await identity.ListUsers(
            pb.ListUsersRequest(page_size=2, email="other", page_token=first.next_page_token),
            metadata=admin.metadata(),
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_nul_character_in_a_filter_is_invalid_argument_not_a_database_error(
    channel: grpc.aio.Channel, server: tuple[NexusServer, int]
) -> None:
    """Found by the fuzz test on PostgreSQL, whose text cannot hold NUL (SQLite's can)."""
    admin = await admin_user(channel, server[0])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await rpc.IdentityServiceStub(channel).ListUsers(
            pb.ListUsersRequest(email="a\x00b"), metadata=admin.metadata()
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(caught.value) == ["email"]


async def test_disabling_a_user_refuses_their_tokens_and_logins(
    channel: grpc.aio.Channel, server: tuple[NexusServer, int]
) -> None:
    admin = await admin_user(channel, server[0])
    user = await register_user(channel)
    identity = rpc.IdentityServiceStub(channel)
    disabled = await identity.DisableUser(
        pb.DisableUserRequest(id=user.user_id, reason="abuse"), metadata=admin.metadata()
    )
    assert (disabled.status, disabled.disable_reason) == (user_pb2.USER_STATUS_DISABLED, "abuse")
    with pytest.raises(grpc.aio.AioRpcError) as token:
        await identity.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=user.metadata())
    assert token.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as signin:
        await identity.Login(pb.LoginRequest(email=user.email, password=user.password))
    with pytest.raises(grpc.aio.AioRpcError) as wrong:
        await identity.Login(pb.LoginRequest(email=user.email, password="Not-The-Password-1!"))
    # The right password of a disabled account is answered exactly as a wrong one.
    assert signin.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert (reason(signin.value), signin.value.details()) == (reason(wrong.value), wrong.value.details())
    await identity.EnableUser(pb.EnableUserRequest(id=user.user_id), metadata=admin.metadata())
    assert (await identity.Login(pb.LoginRequest(email=user.email, password=user.password))).session_id


async def test_an_admin_cannot_disable_themselves(
    channel: grpc.aio.Channel, server: tuple[NexusServer, int]
) -> None:
    admin = await admin_user(channel, server[0])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await rpc.IdentityServiceStub(channel).DisableUser(
            pb.DisableUserRequest(id=admin.user_id), metadata=admin.metadata()
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_get_user_of_an_unknown_id_is_not_found(
    channel: grpc.aio.Channel, server: tuple[NexusServer, int]
) -> None:
    admin = await admin_user(channel, server[0])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await rpc.IdentityServiceStub(channel).GetUser(
            pb.GetUserRequest(id="usr_0000000000000000000000"), metadata=admin.metadata()
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
