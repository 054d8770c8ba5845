"""Each servicer subclasses its generated base and defines exactly its service's RPCs.

mypy refuses to build a servicer that misses one of the base's abstract methods; this test
also refuses a capitalised method that is no RPC (a misspelling that would never be called)
and an RPC left to the base's synchronous placeholder."""

from __future__ import annotations

import inspect

import pytest

from nexus.apikey.v1 import apikey_service_pb2, apikey_service_pb2_grpc
from nexus.events.v1 import events_service_pb2, events_service_pb2_grpc
from nexus.identity.v1 import identity_service_pb2, identity_service_pb2_grpc
from nexus.tenant.v1 import tenant_service_pb2, tenant_service_pb2_grpc
from nexus_server.apikeys.service import ApiKeyServicer
from nexus_server.events.service import EventsServicer
from nexus_server.identity.service import IdentityServicer
from nexus_server.tenants.service import TenantServicer

CASES = [
    (ApiKeyServicer, apikey_service_pb2_grpc.ApiKeyServiceServicer, apikey_service_pb2, "ApiKeyService"),
    (EventsServicer, events_service_pb2_grpc.EventsServiceServicer, events_service_pb2, "EventsService"),
    (
        IdentityServicer,
        identity_service_pb2_grpc.IdentityServiceServicer,
        identity_service_pb2,
        "IdentityService",
    ),
    (TenantServicer, tenant_service_pb2_grpc.TenantServiceServicer, tenant_service_pb2, "TenantService"),
]


@pytest.mark.parametrize(("servicer", "base", "module", "service"), CASES, ids=[c[3] for c in CASES])
def test_a_servicer_defines_its_service_s_rpcs_and_no_others(
    servicer: type, base: type, module: object, service: str
) -> None:
    assert issubclass(servicer, base)
    assert servicer.__name__ == f"{service.removesuffix('Service')}Servicer"
    rpcs = set(module.DESCRIPTOR.services_by_name[service].methods_by_name)  # type: ignore[attr-defined]
    defined = {
        name
        for klass in servicer.__mro__
        if klass not in (base, object)
        for name, value in vars(klass).items()
        if name[:1].isupper() and callable(value)
    }
    assert defined == rpcs, (sorted(defined - rpcs), sorted(rpcs - defined))
    for name in rpcs:
        method = getattr(servicer, name)
        assert inspect.iscoroutinefunction(method) or inspect.isasyncgenfunction(method), name
