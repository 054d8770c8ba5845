"""Helpers for the tenants tests: a TenantService stub, platform administrators, the
reason of a refusal, a populated tenant to act on, and the token of a mailed invitation."""

from __future__ import annotations

import asyncio
import email
import re
from collections.abc import Awaitable
from dataclasses import dataclass
from email.policy import default
from typing import Any

import grpc

from nexus.tenant.v1 import tenant_service_pb2_grpc as rpc
from nexus_server.app.server import NexusServer
from tests.support import User, field_violations, make_tenant, reason, register_user, set_roles

# Shared by every capability's tests now; re-exported for the tenants tests that import them here.
from tests.support import login as login
from tests.support import platform_admin as platform_admin


def tenants(channel: grpc.aio.Channel) -> rpc.TenantServiceStub:
    return rpc.TenantServiceStub(channel)


def details(error: grpc.aio.AioRpcError) -> tuple[str, list[str]]:
    """(ErrorInfo.reason, BadRequest field names) of a refusal."""
    return reason(error), field_violations(error)


async def refusal(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str]:
    """(code, reason) of a call expected to fail; (OK, '') if it succeeded."""
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code(), reason(error)
    return grpc.StatusCode.OK, ""


@dataclass
class Team:
    """A tenant with an owner and a plain member."""

    tenant_id: str
    owner: User
    member: User


async def team(server: NexusServer, channel: grpc.aio.Channel) -> Team:
    owner = await register_user(channel)
    member = await register_user(channel)
    tenant_id = await make_tenant(server, owner.user_id)
    await set_roles(server, tenant_id, member.user_id, ["member"])
    return Team(tenant_id, owner, member)


async def invitation_token(server: NexusServer, address: str) -> str:
    """The token of the newest invitation mailed to `address`, read from the development
    sink (the shared server has no SMTP), so a test can accept it as the person would."""
    sink = server.settings.var_dir / "mail"
    for _ in range(300):
        tokens = []
        for path in sorted(sink.glob("*.eml"), key=lambda p: p.stat().st_mtime) if sink.exists() else []:
            raw = path.read_bytes()
            if address.encode() not in raw:
                continue
            mail = email.message_from_bytes(raw, policy=default)
            if mail["To"] == address and "Invitation" in mail["Subject"]:
                found = re.search(r"token=([A-Za-z0-9_-]{43})", mail.get_content())
                if found:
                    tokens.append(found.group(1))
        if tokens:
            return tokens[-1]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no invitation mailed to {address}")
