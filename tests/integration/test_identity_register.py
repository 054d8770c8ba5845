"""Register: an account and a signed-in session, with tokens that authenticate."""

from __future__ import annotations

import grpc
import pytest

from nexus.identity.v1 import identity_service_pb2 as pb
from nexus.identity.v1 import identity_service_pb2_grpc as rpc
from tests.support import PASSWORD, register_user, unique


async def test_register_returns_a_token_pair_that_authenticates(channel: grpc.aio.Channel) -> None:
    user = await register_user(channel)
    me = await rpc.IdentityServiceStub(channel).GetCurrentUser(
        pb.GetCurrentUserRequest(), metadata=user.metadata()
    )
    assert (me.id, me.email) == (user.user_id, user.email)


async def test_register_lower_cases_and_trims_the_email(channel: grpc.aio.Channel) -> None:
    local = unique("Mixed")
    response = await rpc.IdentityServiceStub(channel).Register(
        pb.RegisterRequest(email=f"  {local}@Example.COM ", password=PASSWORD)
    )
    assert response.user.email == f"{local.lower()}@example.com"


async def test_duplicate_email_is_already_exists(channel: grpc.aio.Channel) -> None:
    user = await register_user(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await rpc.IdentityServiceStub(channel).Register(
            pb.RegisterRequest(email=user.email.upper(), password=PASSWORD)
        )
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
