"""Tenants through gRPC: create, read, list, update, resolve, delete; slugs and domains."""

from __future__ import annotations

import grpc
from google.protobuf import field_mask_pb2
from sqlalchemy import select

from nexus.tenant.v1 import tenant_pb2
from nexus.tenant.v1 import tenant_service_pb2 as pb
from nexus_server.app.server import NexusServer
from tests.integration.tenants_support import details, refusal, team, tenants
from tests.support import DnsZone, issue_key, key_metadata, register_user, unique

Server = tuple[NexusServer, int]


def _new(slug: str, domain: str = "") -> pb.CreateTenantRequest:
    return pb.CreateTenantRequest(
        tenant=tenant_pb2.Tenant(slug=slug, display_name=" Acme Corp ", domain=domain)
    )


async def test_creator_becomes_owner_on_the_free_plan(channel: grpc.aio.Channel) -> None:
    user = await register_user(channel)
    stub = tenants(channel)
    slug = unique("acme")
    created = await stub.CreateTenant(_new(slug.upper()), metadata=user.metadata())
    assert (created.slug, created.display_name, created.plan_id) == (slug, "Acme Corp", "free")
    assert created.status == tenant_pb2.Tenant.STATUS_ACTIVE
    members = await stub.ListMembers(pb.ListMembersRequest(tenant_id=created.id), metadata=user.metadata())
    assert [(m.user_id, list(m.roles)) for m in members.members] == [(user.user_id, ["owner"])]


async def test_creation_writes_its_events_in_the_same_transaction(
    server: Server, channel: grpc.aio.Channel
) -> None:
    from nexus_server.db.schema import events

    user = await register_user(channel)
    created = await tenants(channel).CreateTenant(_new(unique("ev")), metadata=user.metadata())
    async with server[0].db.unit_of_work(readonly=True) as uow:
        rows = await uow.session.execute(
            select(events.c.type).where(events.c.tenant_id == created.id).order_by(events.c.sequence)
        )
        assert [r.type for r in rows] == ["tenant.created", "member.added"]


async def test_domain_is_normalised_and_unique_across_tenants(
    channel: grpc.aio.Channel, dns_zone: DnsZone
) -> None:
    user = await register_user(channel)
    stub = tenants(channel)
    host = unique("bücher")
    created = await stub.CreateTenant(
        _new(unique("d"), f" {host.upper()}.Example.:443"), metadata=user.metadata()
    )
    assert created.domain.startswith("xn--") and created.domain.endswith(".example")
    # Unique among proved domains: the first tenant proves control of it first.
    dns_zone.publish_txt(created.domain_challenge_name, created.domain_challenge_value)
    await stub.VerifyTenantDomain(pb.VerifyTenantDomainRequest(id=created.id), metadata=user.metadata())
    try:
        await stub.CreateTenant(_new(unique("d"), f"{host}.example"), metadata=user.metadata())
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.ALREADY_EXISTS
        assert details(error)[0] == "DOMAIN_TAKEN"
    else:
        raise AssertionError("a taken domain was accepted")


async def test_bad_slug_and_ip_domain_are_field_violations(channel: grpc.aio.Channel) -> None:
    user = await register_user(channel)
    try:
        await tenants(channel).CreateTenant(_new("a--b", "10.0.0.1"), metadata=user.metadata())
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert sorted(details(error)[1]) == ["tenant.domain", "tenant.slug"]
    else:
        raise AssertionError("accepted")


async def test_slug_taken_is_already_exists(channel: grpc.aio.Channel) -> None:
    user = await register_user(channel)
    slug = unique("dup")
    await tenants(channel).CreateTenant(_new(slug), metadata=user.metadata())
    code, reason = await refusal(tenants(channel).CreateTenant(_new(slug), metadata=user.metadata()))
    assert (code, reason) == (grpc.StatusCode.ALREADY_EXISTS, "SLUG_TAKEN")


async def test_update_with_mask_changes_only_named_fields(server: Server, channel: grpc.aio.Channel) -> None:
    t = await team(server[0], channel)
    stub = tenants(channel)
    request = pb.UpdateTenantRequest(
        tenant=tenant_pb2.Tenant(id=t.tenant_id, display_name="Renamed", slug="ignored-not-in-mask"),
        update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
    )
    updated = await stub.UpdateTenant(request, metadata=t.owner.metadata())
    assert updated.display_name == "Renamed" and updated.slug != "ignored-not-in-mask"
    bad_mask = pb.UpdateTenantRequest(
        tenant=tenant_pb2.Tenant(id=t.tenant_id), update_mask=field_mask_pb2.FieldMask(paths=["plan_id"])
    )
    code, reason = await refusal(stub.UpdateTenant(bad_mask, metadata=t.owner.metadata()))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "UPDATE_MASK_INVALID")


async def test_list_shows_only_own_memberships_and_pages_stably(
    server: Server, channel: grpc.aio.Channel
) -> None:
    user = await register_user(channel)
    other = await register_user(channel)
    stub = tenants(channel)
    mine = [(await stub.CreateTenant(_new(unique("p")), metadata=user.metadata())).id for _ in range(3)]
    await stub.CreateTenant(_new(unique("p")), metadata=other.metadata())
    seen, token = [], ""
    while True:
        page = await stub.ListTenants(
            pb.ListTenantsRequest(page_size=2, page_token=token), metadata=user.metadata()
        )
        seen += [t.id for t in page.tenants]
        token = page.next_page_token
        if not token:
            break
    assert seen == mine
    code, reason = await refusal(
        stub.ListTenants(pb.ListTenantsRequest(all_tenants=True), metadata=user.metadata())
    )
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "ROLE_REQUIRED")


async def test_page_token_of_another_query_is_refused(channel: grpc.aio.Channel) -> None:
    user = await register_user(channel)
    stub = tenants(channel)
    for _ in range(2):
        await stub.CreateTenant(_new(unique("q")), metadata=user.metadata())
    page = await stub.ListTenants(pb.ListTenantsRequest(page_size=1), metadata=user.metadata())
    code, reason = await refusal(
        stub.ListTenants(
            pb.ListTenantsRequest(page_size=1, page_token=page.next_page_token, name="x"),
            metadata=user.metadata(),
        )
    )
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "PAGE_TOKEN_INVALID")


async def test_resolve_by_domain_slug_and_id(
    server: Server, channel: grpc.aio.Channel, dns_zone: DnsZone
) -> None:
    user = await register_user(channel)
    host = f"{unique('portal')}.acme.example"
    created = await tenants(channel).CreateTenant(_new(unique("r"), host), metadata=user.metadata())
    # A domain resolves once proved (tests/integration/test_tenants_domains.py).
    dns_zone.publish_txt(created.domain_challenge_name, created.domain_challenge_value)
    await tenants(channel).VerifyTenantDomain(
        pb.VerifyTenantDomainRequest(id=created.id), metadata=user.metadata()
    )
    key = await issue_key(server[0], created.id, ["tenants:read"])
    stub = tenants(channel)
    by_domain = await stub.ResolveTenant(
        pb.ResolveTenantRequest(domain=host.upper() + ".:8443"), metadata=key_metadata(key)
    )
    by_slug = await stub.ResolveTenant(pb.ResolveTenantRequest(slug=created.slug), metadata=key_metadata(key))
    by_id = await stub.ResolveTenant(pb.ResolveTenantRequest(id=created.id), metadata=key_metadata(key))
    assert by_domain.tenant_id == by_slug.tenant_id == by_id.tenant_id == created.id
    code, _ = await refusal(
        stub.ResolveTenant(pb.ResolveTenantRequest(domain="nobody.example"), metadata=key_metadata(key))
    )
    assert code == grpc.StatusCode.NOT_FOUND


async def test_delete_is_soft_revokes_keys_and_frees_the_slug(
    server: Server, channel: grpc.aio.Channel
) -> None:
    t = await team(server[0], channel)
    stub = tenants(channel)
    key = await issue_key(server[0], t.tenant_id, ["tenants:read"])
    created = await stub.GetTenant(pb.GetTenantRequest(id=t.tenant_id), metadata=t.owner.metadata())
    code, _ = await refusal(
        stub.DeleteTenant(pb.DeleteTenantRequest(id=t.tenant_id), metadata=t.member.metadata())
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    await stub.DeleteTenant(pb.DeleteTenantRequest(id=t.tenant_id), metadata=t.owner.metadata())
    code, _ = await refusal(stub.GetTenant(pb.GetTenantRequest(id=t.tenant_id), metadata=t.owner.metadata()))
    assert code == grpc.StatusCode.NOT_FOUND
    code, _ = await refusal(
        stub.ResolveTenant(pb.ResolveTenantRequest(id=t.tenant_id), metadata=key_metadata(key))
    )
    assert code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.NOT_FOUND)
    reused = await stub.CreateTenant(_new(created.slug), metadata=t.member.metadata())
    assert reused.slug == created.slug and reused.id != t.tenant_id
