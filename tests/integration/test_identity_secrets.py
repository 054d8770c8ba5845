"""Nothing secret in plaintext: not in any table, not in the logs; and revocation that
reaches a second replica within a second."""

from __future__ import annotations

import asyncio
import base64
import email
import logging
import re
import time
from email.policy import default

import grpc
import pyotp
import pytest
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select

from nexus.identity.v1 import identity_service_pb2 as pb
from nexus.identity.v1 import identity_service_pb2_grpc as rpc
from nexus_server.app.server import NexusServer, create_server
from nexus_server.db.schema import metadata
from tests.support import register_user


async def _database_text(server: NexusServer) -> str:
    parts = []
    async with server.db.unit_of_work(readonly=True) as uow:
        for table in metadata.sorted_tables:
            for row in (await uow.session.execute(select(table))).all():
                for value in row:
                    parts.append(value.hex() if isinstance(value, bytes) else str(value))
                    if isinstance(value, bytes):
                        parts.append(value.decode("latin-1"))
    return "\n".join(parts)


async def _mailed_token(server: NexusServer, recipient: str, subject: str) -> str:
    sink = server.settings.var_dir / "mail"
    for _ in range(200):
        for path in sink.glob("*.eml") if sink.exists() else []:
            message = email.message_from_bytes(path.read_bytes(), policy=default)
            if message["To"] == recipient and subject in message["Subject"]:
                found = re.search(r"token=(nx[pv]_\w+)", message.get_body(("plain",)).get_content())  # type: ignore[union-attr]
                assert found is not None
                return found.group(1)
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {subject!r} mail for {recipient}")


async def test_no_password_token_or_secret_is_stored_or_logged_in_plaintext(
    channel: grpc.aio.Channel, server: tuple[NexusServer, int], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    identity = rpc.IdentityServiceStub(channel)
    user = await register_user(channel)
    verify = await _mailed_token(server[0], user.email, "Verify")
    refreshed = await identity.RefreshToken(pb.RefreshTokenRequest(refresh_token=user.refresh_token))
    enrolment = await identity.EnrollTotp(
        pb.EnrollTotpRequest(password=user.password), metadata=user.metadata()
    )
    confirmed = await identity.ConfirmTotp(
        pb.ConfirmTotpRequest(code=pyotp.TOTP(enrolment.secret).now()), metadata=user.metadata()
    )
    await identity.RequestPasswordReset(pb.RequestPasswordResetRequest(email=user.email))
    reset = await _mailed_token(server[0], user.email, "Reset")
    await asyncio.sleep(0.3)  # let the sender finish with the queued mail
    key = server[0].capabilities.identity.keys.signing_key()
    raw_private = key.private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    secrets = {
        "password": user.password,
        "refresh token": user.refresh_token,
        "rotated refresh token": refreshed.refresh_token,
        "access token": user.access_token,
        "verification token": verify,
        "reset token": reset,
        "totp secret": enrolment.secret,
        "signing key (hex)": raw_private.hex(),
        "signing key (base64url)": base64.urlsafe_b64encode(raw_private).rstrip(b"=").decode(),
        **{f"recovery code {n}": code for n, code in enumerate(confirmed.recovery_codes)},
        **{
            f"recovery code {n} (bare)": code.replace("-", "")
            for n, code in enumerate(confirmed.recovery_codes)
        },
    }
    stored = await _database_text(server[0])
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert logged, "the grep needs log lines to look at"
    assert [name for name, value in secrets.items() if value in stored] == []
    assert [name for name, value in secrets.items() if value in logged] == []


async def test_a_logout_is_refused_by_another_replica_within_a_second(
    channel: grpc.aio.Channel, server: tuple[NexusServer, int]
) -> None:
    other, port = await create_server(server[0].settings)
    await other.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as second:
            user = await register_user(channel)
            replica = rpc.IdentityServiceStub(second)
            await replica.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=user.metadata())
            await rpc.IdentityServiceStub(channel).Logout(pb.LogoutRequest(), metadata=user.metadata())
            started = time.monotonic()
            refused_after = None
            while time.monotonic() - started < 5:
                try:
                    await replica.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=user.metadata())
                except grpc.aio.AioRpcError as error:
                    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
                    refused_after = time.monotonic() - started
                    break
                await asyncio.sleep(0.02)
            assert refused_after is not None and refused_after < 1.0
    finally:
        await other.stop(grace=1)
