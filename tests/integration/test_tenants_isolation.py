"""Isolation: every Get/List/Update/Delete RPC of the tenant and API-key services, called
with one tenant's credentials on the other tenant's names, is refused (NOT_FOUND or
PERMISSION_DENIED) or answers without a byte of the other tenant's data.

The matrix is built from the descriptor, so a new RPC of these services joins it
unasked; a service added to SERVICES joins it whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor, message_factory

from nexus.tenant.v1 import role_pb2
from nexus_server import contract
from nexus_server.app.server import NexusServer
from nexus_server.tenants import groups, invitations, roles
from tests.integration.tenants_support import team
from tests.support import issue_key, key_metadata, register_user, set_roles

SERVICES = ("nexus.tenant.v1.TenantService", "nexus.apikey.v1.ApiKeyService")
VERBS = ("Get", "List", "Update", "Delete")
REFUSED = (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED)


def _methods() -> list[descriptor.MethodDescriptor]:
    return [
        m
        for s in contract.services()
        if s.full_name in SERVICES
        for m in s.methods
        if m.name.startswith(VERBS)
    ]


@dataclass
class Victim:
    """Tenant B and the names of everything it holds."""

    tenant_id: str
    slug: str
    owner_id: str
    owner_email: str
    member_id: str
    role_id: str
    group_id: str
    invitation_id: str
    invited_email: str
    key_id: str

    def secrets(self) -> list[str]:
        return [v for v in self.__dict__.values() if v]


@dataclass
class Attacker:
    tenant_id: str
    user: Any
    key: str


_cache: dict[str, tuple[Victim, Attacker]] = {}


async def _world(server: NexusServer, channel: grpc.aio.Channel) -> tuple[Victim, Attacker]:
    if server.settings.database_url in _cache:
        return _cache[server.settings.database_url]
    b = await team(server, channel)
    from nexus_server.tenants import store
    from nexus_server.tenants.actor import Actor

    async with server.db.unit_of_work() as uow:
        role = await roles.create_role(uow, Actor(), b.tenant_id, "Secret role", "", ["tenants.read"])
        group = await groups.create_group(uow, Actor(), b.tenant_id, "Secret group", "", ["member"])
        email = f"invitee-{b.tenant_id.lower()}@example.com"
        invitation = await invitations.invite(
            uow, invitations.Post(), b.tenant_id, email, ["member"], b.owner.user_id, invitations.DEFAULT_TTL
        )
        tenant = await store.get_tenant(uow.session, b.tenant_id)
    assert tenant is not None
    b_key = await issue_key(server, b.tenant_id, ["*"])
    victim = Victim(
        b.tenant_id,
        tenant.slug,
        b.owner.user_id,
        b.owner.email,
        b.member.user_id,
        role.id,
        group.id,
        invitation.id,
        email,
        b_key.split(".", 1)[0],
    )
    a_owner = await register_user(channel)
    from tests.support import make_tenant

    a_tenant = await make_tenant(server, a_owner.user_id)
    await set_roles(server, a_tenant, a_owner.user_id, ["owner"])
    attacker = Attacker(a_tenant, a_owner, await issue_key(server, a_tenant, ["*"]))
    _cache[server.settings.database_url] = (victim, attacker)
    return victim, attacker


def _request(method: descriptor.MethodDescriptor, v: Victim) -> Any:
    """The method's request naming B's resources wherever a field can name one, with a
    valid update where the RPC updates (so refusals are about isolation, not input)."""
    is_keys = method.containing_service.name == "ApiKeyService"
    names = {
        "tenant_id": v.tenant_id,
        "id": v.key_id if is_keys else v.tenant_id,
        "user_id": v.member_id,
        "group_id": v.group_id,
        "role_id": v.role_id,
        "invitation_id": v.invitation_id,
    }
    resource_ids = {"tenant": v.tenant_id, "role": v.role_id, "group": v.group_id, "api_key": v.key_id}
    request: Any = message_factory.GetMessageClass(method.input_type)()  # any RPC's request message
    for field in request.DESCRIPTOR.fields:
        if field.type == field.TYPE_STRING and not field.is_repeated and field.name in names:
            setattr(request, field.name, names[field.name])
        elif field.type == field.TYPE_MESSAGE and field.name in (*resource_ids, "member"):
            resource = getattr(request, field.name)
            if field.name == "member":
                resource.user_id = v.member_id
                resource.roles[:] = ["read_only"]
                request.update_mask.paths[:] = ["roles"]
                continue
            resource.id = resource_ids[field.name]
            for name in ("name", "display_name"):
                if name in resource.DESCRIPTOR.fields_by_name:
                    setattr(resource, name, "Hacked")
                    request.update_mask.paths[:] = [name]
    return request


@pytest.mark.parametrize("method", _methods(), ids=lambda m: f"{m.containing_service.name}.{m.name}")
@pytest.mark.parametrize("credential", ["token-own-tenant", "token-other-tenant", "api-key"])
async def test_other_tenants_names_are_refused_or_invisible(
    server: tuple[NexusServer, int],
    channel: grpc.aio.Channel,
    method: descriptor.MethodDescriptor,
    credential: str,
) -> None:
    victim, attacker = await _world(server[0], channel)
    metadata = {
        "token-own-tenant": attacker.user.metadata(attacker.tenant_id),
        "token-other-tenant": attacker.user.metadata(victim.tenant_id),
        "api-key": key_metadata(attacker.key),
    }[credential]
    request = _request(method, victim)
    call = channel.unary_unary(
        contract.method_path(method), request_serializer=type(request).SerializeToString
    )
    try:
        answer: bytes = await call(request, metadata=metadata)
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.UNIMPLEMENTED:
            pytest.xfail(f"{method.full_name} is not implemented yet")  # not-OK is all it can show
        assert error.code() in REFUSED, f"{error.code()}: {error.details()}"
        # Echoing a name the caller sent is not a leak; anything else of B's would be.
        sent = request.SerializeToString() + repr(metadata).encode()
        leaked = [s for s in victim.secrets() if s in (error.details() or "") and s.encode() not in sent]
        assert not leaked
        return
    leaked = [s for s in victim.secrets() if s.encode() in answer]
    assert not leaked, f"{method.name} answered with tenant B's {leaked}"


async def test_the_matrix_covers_every_read_and_write_of_both_services() -> None:
    names = {f"{m.containing_service.name}.{m.name}" for m in _methods()}
    assert {"TenantService.GetTenant", "TenantService.ListMembers", "ApiKeyService.GetApiKey"} <= names
    assert all(n.split(".")[1].startswith(VERBS) for n in names)


def test_victims_role_is_a_role_message() -> None:
    # The request builder fills `role.id`; if Role's identifier moved, the matrix would stop naming B.
    assert "id" in role_pb2.Role.DESCRIPTOR.fields_by_name
