"""TOTP: enrolment, the code Login then requires, and single-use recovery codes."""

from __future__ import annotations

import time

import grpc
import pyotp
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from nexus.identity.v1 import identity_service_pb2 as pb
from nexus.identity.v1 import identity_service_pb2_grpc as rpc
from tests.support import User, register_user


def reason(error: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(error)
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return str(info.reason)
    return ""


async def enrolled(channel: grpc.aio.Channel) -> tuple[User, pyotp.TOTP, list[str]]:
    identity = rpc.IdentityServiceStub(channel)
    user = await register_user(channel)
    enrolment = await identity.EnrollTotp(
        pb.EnrollTotpRequest(password=user.password), metadata=user.metadata()
    )
    assert enrolment.otpauth_uri.startswith("otpauth://totp/") and len(enrolment.secret) == 32
    totp = pyotp.TOTP(enrolment.secret)
    confirmed = await identity.ConfirmTotp(pb.ConfirmTotpRequest(code=totp.now()), metadata=user.metadata())
    assert confirmed.user.totp_enabled and len(confirmed.recovery_codes) == 10
    return user, totp, list(confirmed.recovery_codes)


async def login(channel: grpc.aio.Channel, user: User, code: str = "") -> pb.LoginResponse:
    response: pb.LoginResponse = await rpc.IdentityServiceStub(channel).Login(
        pb.LoginRequest(email=user.email, password=user.password, totp_code=code)
    )
    return response


async def test_login_without_a_code_is_totp_required(channel: grpc.aio.Channel) -> None:
    user, _, _ = await enrolled(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await login(channel, user)
    assert (caught.value.code(), reason(caught.value)) == (grpc.StatusCode.UNAUTHENTICATED, "TOTP_REQUIRED")


async def test_a_wrong_code_is_totp_invalid(channel: grpc.aio.Channel) -> None:
    user, totp, _ = await enrolled(channel)
    wrong = "000000" if totp.now() != "000000" else "111111"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await login(channel, user, wrong)
    assert reason(caught.value) == "TOTP_INVALID"


async def test_a_code_from_the_next_period_signs_in_once(channel: grpc.aio.Channel) -> None:
    user, totp, _ = await enrolled(channel)
    # The confirm code was spent; the next period's code is accepted (clock drift), once.
    code = totp.at(time.time() + 30)
    assert (await login(channel, user, code)).session_id
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await login(channel, user, code)
    assert reason(caught.value) == "TOTP_INVALID"


async def test_recovery_codes_work_once_in_any_case(channel: grpc.aio.Channel) -> None:
    user, _, codes = await enrolled(channel)
    assert (await login(channel, user, codes[0].upper().replace("-", ""))).session_id
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await login(channel, user, codes[0])
    assert reason(caught.value) == "TOTP_INVALID"
    assert (await login(channel, user, codes[1])).session_id


async def test_disable_totp_with_a_recovery_code_turns_it_off(channel: grpc.aio.Channel) -> None:
    user, _, codes = await enrolled(channel)
    updated = await rpc.IdentityServiceStub(channel).DisableTotp(
        pb.DisableTotpRequest(code=codes[2]), metadata=user.metadata()
    )
    assert not updated.totp_enabled
    assert (await login(channel, user)).session_id


async def test_enrolling_twice_is_refused_once_enabled(channel: grpc.aio.Channel) -> None:
    user, _, _ = await enrolled(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await rpc.IdentityServiceStub(channel).EnrollTotp(
            pb.EnrollTotpRequest(password=user.password), metadata=user.metadata()
        )
    assert reason(caught.value) == "TOTP_ALREADY_ENABLED"


async def test_confirm_without_enrolment_is_not_enrolled(channel: grpc.aio.Channel) -> None:
    user = await register_user(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await rpc.IdentityServiceStub(channel).ConfirmTotp(
            pb.ConfirmTotpRequest(code="123456"), metadata=user.metadata()
        )
    assert reason(caught.value) == "TOTP_NOT_ENROLLED"
