"""Brute force: failures counted per email and address in the database, race-free; the
attacker is slowed down, never the account's owner."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from nexus.identity.v1 import identity_service_pb2 as pb
from nexus.identity.v1 import identity_service_pb2_grpc as rpc
from nexus_server.app.server import NexusServer, create_server
from nexus_server.config import Settings
from nexus_server.identity.throttle import Policy
from tests.support import Inbox, register_user, token_in

LIMIT = Policy().free_attempts


@contextlib.contextmanager
def _policy(server: NexusServer, **changes: Any) -> Iterator[None]:
    """The shared test server's sign-in policy, changed for one test only."""
    limiter = server.capabilities.identity.throttle
    before = limiter.policy
    limiter.policy = replace(before, **changes)
    try:
        yield
    finally:
        limiter.policy = before


def _address() -> str:
    return f"198.51.100.{uuid.uuid4().int % 250 + 1}, 10.{uuid.uuid4().int % 250}.0.1"


def _details(error: grpc.aio.AioRpcError) -> tuple[str, float | None]:
    status = rpc_status.from_call(error)
    assert status is not None
    reason, delay = "", None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            delay = retry.retry_delay.ToTimedelta().total_seconds()
    return reason, delay


async def _attempt(channel: grpc.aio.Channel, email: str, password: str, address: str) -> str:
    try:
        await rpc.IdentityServiceStub(channel).Login(
            pb.LoginRequest(email=email, password=password), metadata=(("x-forwarded-for", address),)
        )
    except grpc.aio.AioRpcError as error:
        reason, delay = _details(error)
        if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
            assert delay is not None and delay > 0
        return reason
    return "OK"


async def test_twenty_parallel_wrong_passwords_never_pass_the_limit(channel: grpc.aio.Channel) -> None:
    user = await register_user(channel)
    address = _address()
    outcomes = await asyncio.gather(
        *(_attempt(channel, user.email, f"Wrong-Guess-{n}!x", address) for n in range(20))
    )
    checked = outcomes.count("INVALID_CREDENTIALS")
    assert 1 <= checked <= LIMIT
    assert set(outcomes) <= {"INVALID_CREDENTIALS", "LOGIN_THROTTLED", "ACCOUNT_LOCKED"}


async def test_after_the_free_attempts_even_the_right_password_must_wait(channel: grpc.aio.Channel) -> None:
    user = await register_user(channel)
    address = _address()
    for n in range(LIMIT):
        assert await _attempt(channel, user.email, f"Wrong-Guess-{n}!x", address) == "INVALID_CREDENTIALS"
    assert await _attempt(channel, user.email, user.password, address) == "LOGIN_THROTTLED"


async def test_an_unknown_email_is_throttled_like_a_known_one(channel: grpc.aio.Channel) -> None:
    address = _address()
    email = f"ghost-{uuid.uuid4().hex}@example.com"
    outcomes = [await _attempt(channel, email, f"Wrong-Guess-{n}!x", address) for n in range(LIMIT + 1)]
    assert outcomes == ["INVALID_CREDENTIALS"] * LIMIT + ["LOGIN_THROTTLED"]


async def test_a_right_password_clears_earlier_failures(channel: grpc.aio.Channel) -> None:
    user = await register_user(channel)
    address = _address()
    for n in range(LIMIT - 1):
        await _attempt(channel, user.email, f"Wrong-Guess-{n}!x", address)
    assert await _attempt(channel, user.email, user.password, address) == "OK"
    for n in range(LIMIT - 1):
        assert await _attempt(channel, user.email, f"Wrong-Guess-{n}!x", address) == "INVALID_CREDENTIALS"


async def test_sign_ups_per_address_are_limited_before_any_hash(settings: Settings) -> None:
    """Each Register hashes a password (the costliest thing an anonymous caller can ask
    for): past the limit an address waits, with RetryInfo, and the refused call stores
    nothing; another address is not affected."""
    srv, port = await create_server(replace(settings, signups_per_address=3))
    await srv.start()
    address, other = _address(), _address()

    async def sign_up(email: str, at: str) -> grpc.aio.AioRpcError | None:
        try:
            await rpc.IdentityServiceStub(direct).Register(
                pb.RegisterRequest(email=email, password="Correct-Horse-9!"),
                metadata=(("x-forwarded-for", at),),
            )
        except grpc.aio.AioRpcError as error:
            return error
        return None

    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as direct:
            emails = [f"signup-{uuid.uuid4().hex}@example.com" for _ in range(4)]
            assert [await sign_up(e, address) for e in emails[:3]] == [None, None, None]
            refused = await sign_up(emails[3], address)
            assert refused is not None and refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            reason, delay = _details(refused)
            assert reason == "SIGNUP_THROTTLED" and delay is not None and delay > 0
            # Nothing was stored for the refused call: its email is free from elsewhere.
            assert await sign_up(emails[3], other) is None
    finally:
        await srv.stop(grace=1)


async def test_failures_from_one_address_do_not_lock_the_owner_out_elsewhere(
    channel: grpc.aio.Channel, server: tuple[NexusServer, int]
) -> None:
    """Ten wrong passwords from the attacker's address lock that address out of the
    account; the owner, signing in from anywhere else, is not held back at all."""
    user = await register_user(channel)
    attacker, owner = _address(), _address()
    with _policy(server[0], max_delay=timedelta(0)):  # no delays: straight to the lock
        lock_after = Policy().lock_after
        outcomes = [await _attempt(channel, user.email, f"Wrong-{n}!x", attacker) for n in range(lock_after)]
        assert outcomes == ["INVALID_CREDENTIALS"] * lock_after
        assert await _attempt(channel, user.email, user.password, attacker) == "ACCOUNT_LOCKED"
        assert await _attempt(channel, user.email, user.password, owner) == "OK"
        assert await _attempt(channel, user.email, user.password, attacker) == "ACCOUNT_LOCKED"


async def test_guessing_spread_over_many_addresses_holds_back_new_devices_only(
    channel: grpc.aio.Channel, server: tuple[NexusServer, int]
) -> None:
    """Past `spread_after` failures from all addresses, a device the account has not used
    waits; the owner's known device signs in at once, and nothing locks the account."""
    user = await register_user(channel)
    home = _address()
    assert await _attempt(channel, user.email, user.password, home) == "OK"  # now a known device
    with _policy(server[0], spread_after=3):
        for n in range(4):  # four attackers, one guess each: no address reaches its own limit
            assert await _attempt(channel, user.email, f"Wrong-{n}!x", _address()) == "INVALID_CREDENTIALS"
        assert await _attempt(channel, user.email, user.password, _address()) == "LOGIN_THROTTLED"
        assert await _attempt(channel, user.email, user.password, home) == "OK"


async def test_a_password_reset_lets_the_owner_in_from_a_locked_address(
    smtp_server: tuple[grpc.aio.Channel, Inbox],
) -> None:
    """The attacker shares the owner's address (one office, one NAT) and locked it out of
    the account: resetting the password proves the mailbox and clears every count."""
    channel, inbox = smtp_server
    identity = rpc.IdentityServiceStub(channel)
    user = await register_user(channel)
    shared = _address()
    outcomes = [await _attempt(channel, user.email, f"Wrong-Guess-{n}!x", shared) for n in range(LIMIT + 1)]
    assert outcomes[-1] in ("LOGIN_THROTTLED", "ACCOUNT_LOCKED")
    await identity.RequestPasswordReset(pb.RequestPasswordResetRequest(email=user.email))
    token = token_in(await inbox.wait_for(user.email, "Reset"))
    await identity.ResetPassword(pb.ResetPasswordRequest(token=token, new_password="Brand-New-Pass-42"))
    assert await _attempt(channel, user.email, "Brand-New-Pass-42", shared) == "OK"
