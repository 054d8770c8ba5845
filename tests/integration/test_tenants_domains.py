"""Custom domains need proof of control: a DNS TXT record, looked up on a real DNS server
(dnslib on loopback), before the domain acts for its tenant; no one can squat a domain."""

from __future__ import annotations

import grpc
import pytest

from nexus.tenant.v1 import tenant_pb2
from nexus.tenant.v1 import tenant_service_pb2 as pb
from nexus_server.app.server import NexusServer
from tests.integration.tenants_support import details, tenants
from tests.support import DnsZone, User, issue_key, key_metadata, make_tenant, register_user, unique


async def _tenant_with_domain(channel: grpc.aio.Channel, owner: User, domain: str) -> tenant_pb2.Tenant:
    request = pb.CreateTenantRequest(
        tenant=tenant_pb2.Tenant(slug=unique("dom"), display_name="Domain Co", domain=domain)
    )
    tenant: tenant_pb2.Tenant = await tenants(channel).CreateTenant(request, metadata=owner.metadata())
    return tenant


async def _verify(channel: grpc.aio.Channel, owner: User, tenant_id: str) -> tenant_pb2.Tenant:
    request = pb.VerifyTenantDomainRequest(id=tenant_id)
    tenant: tenant_pb2.Tenant = await tenants(channel).VerifyTenantDomain(request, metadata=owner.metadata())
    return tenant


async def _resolves_to(channel: grpc.aio.Channel, key: str, domain: str) -> str:
    """Whom the domain acts for, asked as a sub-project does (a key with `tenants:read`)."""
    request = pb.ResolveTenantRequest(domain=domain)
    try:
        resolved: pb.ResolveTenantResponse = await tenants(channel).ResolveTenant(
            request, metadata=key_metadata(key)
        )
        return resolved.tenant_id
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.NOT_FOUND
        return ""


async def _resolver_key(server: NexusServer, owner: User) -> str:
    return await issue_key(server, await make_tenant(server, owner.user_id), ["tenants:read"])


async def test_a_domain_is_pending_until_its_txt_record_proves_control(
    channel: grpc.aio.Channel, dns_zone: DnsZone, server: tuple[NexusServer, int]
) -> None:
    owner = await register_user(channel)
    key = await _resolver_key(server[0], owner)
    domain = f"{unique('portal')}.example.com"
    created = await _tenant_with_domain(channel, owner, domain)
    assert (created.domain, created.HasField("domain_verify_time")) == (domain, False)
    assert created.domain_challenge_name == f"_nexus-challenge.{domain}"
    assert created.domain_challenge_value.startswith("nexus-verification=")
    assert await _resolves_to(channel, key, domain) == ""

    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await _verify(channel, owner, created.id)
    assert missing.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details(missing.value)[0] == "DOMAIN_VERIFICATION_FAILED"
    dns_zone.publish_txt(created.domain_challenge_name, "nexus-verification=someone-elses-token")
    with pytest.raises(grpc.aio.AioRpcError) as wrong:
        await _verify(channel, owner, created.id)
    assert wrong.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert await _resolves_to(channel, key, domain) == ""

    dns_zone.publish_txt(created.domain_challenge_name, created.domain_challenge_value)
    verified = await _verify(channel, owner, created.id)
    assert verified.HasField("domain_verify_time")
    assert await _resolves_to(channel, key, domain) == created.id
    assert (await _verify(channel, owner, created.id)).domain_verify_time == verified.domain_verify_time


async def test_pending_claims_do_not_block_each_other_and_the_first_proof_wins(
    channel: grpc.aio.Channel, dns_zone: DnsZone, server: tuple[NexusServer, int]
) -> None:
    owner, squatter = await register_user(channel), await register_user(channel)
    key = await _resolver_key(server[0], owner)
    domain = f"{unique('shop')}.example.org"
    squatted = await _tenant_with_domain(channel, squatter, domain)  # first, but cannot prove it
    real = await _tenant_with_domain(channel, owner, domain)  # a pending claim does not block
    assert real.domain_challenge_value != squatted.domain_challenge_value
    dns_zone.publish_txt(real.domain_challenge_name, real.domain_challenge_value)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _verify(channel, squatter, squatted.id)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    await _verify(channel, owner, real.id)
    assert await _resolves_to(channel, key, domain) == real.id

    # Now proved, the domain is taken: for new claims and for the squatter's pending one.
    with pytest.raises(grpc.aio.AioRpcError) as taken:
        await _tenant_with_domain(channel, squatter, domain)
    assert (taken.value.code(), details(taken.value)[0]) == (grpc.StatusCode.ALREADY_EXISTS, "DOMAIN_TAKEN")
    dns_zone.publish_txt(squatted.domain_challenge_name, squatted.domain_challenge_value)
    with pytest.raises(grpc.aio.AioRpcError) as late:
        await _verify(channel, squatter, squatted.id)
    assert (late.value.code(), details(late.value)[0]) == (grpc.StatusCode.ALREADY_EXISTS, "DOMAIN_TAKEN")


async def test_changing_the_domain_starts_a_new_claim(
    channel: grpc.aio.Channel, dns_zone: DnsZone, server: tuple[NexusServer, int]
) -> None:
    owner = await register_user(channel)
    key = await _resolver_key(server[0], owner)
    first = f"{unique('one')}.example.net"
    created = await _tenant_with_domain(channel, owner, first)
    dns_zone.publish_txt(created.domain_challenge_name, created.domain_challenge_value)
    await _verify(channel, owner, created.id)
    second = f"{unique('two')}.example.net"
    changed = await tenants(channel).UpdateTenant(
        pb.UpdateTenantRequest(tenant=tenant_pb2.Tenant(id=created.id, domain=second)),
        metadata=owner.metadata(),
    )
    assert not changed.HasField("domain_verify_time")
    assert changed.domain_challenge_value != created.domain_challenge_value
    assert await _resolves_to(channel, key, first) == "" and await _resolves_to(channel, key, second) == ""
