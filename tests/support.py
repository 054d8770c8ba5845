"""Real credentials for tests of any capability: users through IdentityService.Register,
tenants and memberships through the tenants workflows, API keys through the API-key
workflow. Nothing here fakes authentication. Also the google.rpc status details of a refusal
(status_detail, error_info, reason, field_violations) and an SMTP inbox for the mail flows."""

from __future__ import annotations

import asyncio
import email
import itertools
import re
import socket
import uuid
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import default
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from nexus_server.app.server import NexusServer
from nexus_server.db.uow import Database

PASSWORD = "Correct-Horse-9-Battery"
_counter = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}{next(_counter)}{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class User:
    user_id: str
    email: str
    password: str
    access_token: str
    refresh_token: str
    session_id: str

    def metadata(self, tenant_id: str = "") -> tuple[tuple[str, str], ...]:
        md: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {self.access_token}"),)
        return (*md, ("x-tenant-id", tenant_id)) if tenant_id else md


def key_metadata(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


async def register_user(
    channel: grpc.aio.Channel, *, email: str | None = None, password: str = PASSWORD
) -> User:
    from nexus.identity.v1 import identity_service_pb2 as pb
    from nexus.identity.v1 import identity_service_pb2_grpc as rpc

    email = email or f"{unique('user')}@example.com"
    response = await rpc.IdentityServiceStub(channel).Register(
        pb.RegisterRequest(email=email, password=password, display_name="Test User")
    )
    return User(
        response.user.id, email, password, response.access_token, response.refresh_token, response.session_id
    )


async def make_tenant(server: NexusServer, owner_user_id: str, *, slug: str | None = None) -> str:
    from nexus_server.tenants.workflows import create_tenant

    async with server.db.unit_of_work() as uow:
        row = await create_tenant(
            uow, owner_user_id=owner_user_id, slug=slug or unique("t"), display_name="Test"
        )
    return row.id


async def set_roles(server: NexusServer, tenant_id: str, user_id: str, roles: list[str]) -> None:
    from nexus_server.tenants.workflows import set_member_roles

    async with server.db.unit_of_work() as uow:
        await set_member_roles(uow, server.ctx.revocations, tenant_id, user_id, roles)


async def issue_key(
    server: NexusServer, tenant_id: str, scopes: list[str], *, rate_limit_per_minute: int = 100_000
) -> str:
    """A live API key of `tenant_id` holding `scopes`; returns the full key `<id>.<secret>`."""
    from nexus_server.apikeys.workflows import issue_key as issue

    async with server.db.unit_of_work() as uow:
        _, full_key = await issue(
            uow,
            tenant_id=tenant_id,
            name=unique("key"),
            scopes=scopes,
            rate_limit_per_minute=rate_limit_per_minute,
        )
    return full_key


async def event_keys(database_url: str) -> tuple[str, str]:
    """A new tenant's full keys, one with `events:publish` and one with `events:subscribe`,
    written straight to the database at `database_url` (for tests whose server runs in
    another process)."""
    from nexus_server.apikeys.workflows import issue_key as issue
    from nexus_server.common.ids import new_id
    from nexus_server.db.engine import create_async
    from nexus_server.db.uow import Database
    from nexus_server.tenants.workflows import create_tenant

    db = Database(create_async(database_url))
    try:
        async with db.unit_of_work() as uow:
            tenant = await create_tenant(
                uow, owner_user_id=new_id("usr"), slug=unique("ev"), display_name="Events"
            )
            _, publisher = await issue(uow, tenant_id=tenant.id, name="pub", scopes=["events:publish"])
            _, reader = await issue(uow, tenant_id=tenant.id, name="sub", scopes=["events:subscribe"])
    finally:
        await db.dispose()
    return publisher, reader


async def usage_tenant(database_url: str) -> tuple[str, str]:
    """A new tenant and the full key of its API key holding usage:write and usage:read,
    written straight to the database at `database_url` (for servers in another process)."""
    from nexus_server.apikeys.workflows import issue_key as issue
    from nexus_server.common.ids import new_id
    from nexus_server.db.engine import create_async
    from nexus_server.db.uow import Database
    from nexus_server.tenants.workflows import create_tenant

    db = Database(create_async(database_url))
    try:
        async with db.unit_of_work() as uow:
            tenant = await create_tenant(
                uow, owner_user_id=new_id("usr"), slug=unique("use"), display_name="U"
            )
            _, key = await issue(
                uow,
                tenant_id=tenant.id,
                name="use",
                scopes=["usage:write", "usage:read"],
                rate_limit_per_minute=100_000,  # re-sending everything is many calls
            )
    finally:
        await db.dispose()
    return tenant.id, key


@dataclass(frozen=True)
class StoredUsage:
    """A tenant's usage as stored, Nexus's own `api_calls` metering left out."""

    keys: list[str]  # the idempotency keys of its raw records
    quantity: int  # their summed quantity
    rolled_up: int  # the daily rollups' summed quantity

    @property
    def counts(self) -> tuple[int, int, int]:
        return len(self.keys), self.quantity, self.rolled_up


async def stored_usage(db: Database, tenant_id: str) -> StoredUsage:
    from sqlalchemy import func, select

    from nexus_server.usage.tables import usage_daily, usage_records

    records = usage_records.c
    async with db.unit_of_work(readonly=True) as uow:
        rows = await uow.session.execute(
            select(records.idempotency_key, records.quantity).where(
                records.tenant_id == tenant_id, records.metric != "api_calls"
            )
        )
        found = list(rows)
        rolled = await uow.session.scalar(
            select(func.coalesce(func.sum(usage_daily.c.quantity), 0)).where(
                usage_daily.c.tenant_id == tenant_id, usage_daily.c.metric != "api_calls"
            )
        )
    return StoredUsage([k for k, _ in found], sum(int(q) for _, q in found), int(rolled or 0))


async def login(channel: grpc.aio.Channel, email: str, user_id: str, tenant_id: str = "") -> User:
    """`email` (password PASSWORD) signed in again: a User with a fresh session."""
    from nexus.identity.v1 import identity_service_pb2 as pb
    from nexus.identity.v1 import identity_service_pb2_grpc as rpc

    response = await rpc.IdentityServiceStub(channel).Login(
        pb.LoginRequest(email=email, password=PASSWORD, tenant_id=tenant_id)
    )
    return User(user_id, email, PASSWORD, response.access_token, response.refresh_token, response.session_id)


async def platform_admin(server: NexusServer, channel: grpc.aio.Channel) -> User:
    """A real platform administrator: made by identity's operator workflow, then signed in."""
    from nexus_server.identity.admin import create_admin

    email = f"{unique('admin')}@example.com"
    user_id, _ = await create_admin(server.capabilities.identity, email=email, password=PASSWORD)
    return await login(channel, email, user_id)


# google.rpc status details of a refusal (the `grpc-status-details-bin` trailer).

M = TypeVar("M", bound=Message)


def _status(source: grpc.RpcError | status_pb2.Status) -> status_pb2.Status | None:
    if isinstance(source, status_pb2.Status):
        return source
    return rpc_status.from_call(source)


def status_details(source: grpc.RpcError | status_pb2.Status, cls: type[M]) -> list[M]:
    """Every detail of type `cls` in an error (sync or aio) or a google.rpc.Status; [] when the
    error carries no google.rpc.Status at all."""
    status = _status(source)
    found: list[M] = []
    for detail in status.details if status is not None else ():
        if detail.Is(cls.DESCRIPTOR):
            message = cls()
            detail.Unpack(message)
            found.append(message)
    return found


def status_detail(source: grpc.RpcError | status_pb2.Status, cls: type[M]) -> M:
    """The detail of type `cls`; fails the test when there is none."""
    found = status_details(source, cls)
    if not found:
        raise AssertionError(f"no {cls.__name__} in details")
    return found[0]


def error_info(source: grpc.RpcError | status_pb2.Status) -> error_details_pb2.ErrorInfo:
    return status_detail(source, error_details_pb2.ErrorInfo)


def reason(source: grpc.RpcError | status_pb2.Status) -> str:
    """ErrorInfo.reason, or "" when the refusal carries no ErrorInfo."""
    found = status_details(source, error_details_pb2.ErrorInfo)
    return str(found[0].reason) if found else ""


def field_violations(source: grpc.RpcError | status_pb2.Status) -> list[str]:
    """The field names of every BadRequest violation, in order ([] when there is none)."""
    return [
        v.field for bad in status_details(source, error_details_pb2.BadRequest) for v in bad.field_violations
    ]


_MAILED_TOKEN = re.compile(r"token=(nx[vp]_[0-9A-Za-z]+)")


def token_in(message: EmailMessage) -> str:
    """The one-time token in a verification or reset email's link."""
    body = message.get_body(("plain",))
    assert body is not None
    found = _MAILED_TOKEN.search(body.get_content())
    assert found is not None
    return found.group(1)


# A real SMTP endpoint (aiosmtpd) for the mail flows; the fixture is `smtp_server` in conftest.


class Inbox:
    """An aiosmtpd handler that keeps every message it is sent."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content, policy=default))
        return "250 OK"

    async def wait_for(self, recipient: str, subject: str, seconds: float = 15) -> EmailMessage:
        for _ in range(int(seconds / 0.05)):
            for message in self.messages:
                if message["To"] == recipient and subject in message["Subject"]:
                    return message
            await asyncio.sleep(0.05)
        raise AssertionError(f"no mail to {recipient} about {subject!r}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class DnsZone:
    """A real DNS server (dnslib, UDP) on 127.0.0.1 answering TXT records the tests publish;
    every other question gets NXDOMAIN. Nexus reaches it through NEXUS_DNS_NAMESERVERS."""

    def __init__(self) -> None:
        from dnslib.server import BaseResolver, DNSLogger, DNSServer

        zone = self
        self.records: dict[str, list[str]] = {}

        class Resolver(BaseResolver):  # type: ignore[misc]
            def resolve(self, request: Any, handler: Any) -> Any:
                from dnslib import QTYPE, RCODE, RR, TXT

                reply = request.reply()
                name = str(request.q.qname).rstrip(".").lower()
                values = zone.records.get(name, [])
                if request.q.qtype == QTYPE.TXT and values:
                    for value in values:
                        reply.add_answer(RR(request.q.qname, QTYPE.TXT, rdata=TXT(value), ttl=0))
                elif not values:
                    reply.header.rcode = RCODE.NXDOMAIN
                return reply

        self.port = free_port()
        quiet = DNSLogger(log="-request,-reply,-truncated,-error,-recv,-send,-data", logf=lambda _: None)
        self._server = DNSServer(Resolver(), port=self.port, address="127.0.0.1", logger=quiet)

    @property
    def nameserver(self) -> str:
        return f"127.0.0.1:{self.port}"

    def publish_txt(self, name: str, value: str) -> None:
        self.records.setdefault(name.rstrip(".").lower(), []).append(value)

    def start(self) -> None:
        self._server.start_thread()

    def stop(self) -> None:
        self._server.stop()
