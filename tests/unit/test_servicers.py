"""Each servicer is its generated base's subclass, holds only the contract's RPCs, and says
which it leaves unbuilt: a misspelt method is an error here (and in mypy), not a silent
UNIMPLEMENTED."""

from __future__ import annotations

import inspect
from types import SimpleNamespace

import pytest
from google.protobuf import descriptor

from nexus.apikey.v1 import apikey_service_pb2, apikey_service_pb2_grpc
from nexus.events.v1 import events_service_pb2, events_service_pb2_grpc
from nexus.identity.v1 import identity_service_pb2, identity_service_pb2_grpc
from nexus.tenant.v1 import tenant_service_pb2, tenant_service_pb2_grpc
from nexus.usage.v1 import usage_service_pb2, usage_service_pb2_grpc
from nexus_server.apikeys.service import ApiKeyServicer
from nexus_server.app.handlers import service_handler
from nexus_server.common.errors import Unimplemented
from nexus_server.common.unimplemented import UNIMPLEMENTED
from nexus_server.events.service import EventsServicer
from nexus_server.identity.service import IdentityServicer
from nexus_server.tenants.service import TenantServicer
from nexus_server.usage.service import UsageServicer

# (servicer, its generated base, its service): the one naming scheme is `<Capability>Servicer`.
SERVICERS: list[tuple[type, type, descriptor.ServiceDescriptor]] = [
    (
        ApiKeyServicer,
        apikey_service_pb2_grpc.ApiKeyServiceServicer,
        apikey_service_pb2.DESCRIPTOR.services_by_name["ApiKeyService"],
    ),
    (
        IdentityServicer,
        identity_service_pb2_grpc.IdentityServiceServicer,
        identity_service_pb2.DESCRIPTOR.services_by_name["IdentityService"],
    ),
    (
        TenantServicer,
        tenant_service_pb2_grpc.TenantServiceServicer,
        tenant_service_pb2.DESCRIPTOR.services_by_name["TenantService"],
    ),
    (
        EventsServicer,
        events_service_pb2_grpc.EventsServiceServicer,
        events_service_pb2.DESCRIPTOR.services_by_name["EventsService"],
    ),
    (
        UsageServicer,
        usage_service_pb2_grpc.UsageServiceServicer,
        usage_service_pb2.DESCRIPTOR.services_by_name["UsageService"],
    ),
]
_IDS = [s[0].__name__ for s in SERVICERS]


def _own_public_names(servicer: type, base: type) -> set[str]:
    """Public attributes the servicer (and any class between it and its base) defines."""
    names: set[str] = set()
    for cls in servicer.__mro__[: servicer.__mro__.index(base)]:
        names |= {name for name in vars(cls) if not name.startswith("_")}
    return names


def rpc_mismatches(servicer: type, base: type, service: descriptor.ServiceDescriptor) -> list[str]:
    """What is wrong with a servicer against its base: names that are no RPC (a misspelling),
    RPCs neither implemented nor marked UNIMPLEMENTED, and RPCs that are not async."""
    rpcs = {m.name for m in service.methods}
    problems = []
    if not issubclass(servicer, base):
        problems.append(f"{servicer.__name__} does not subclass {base.__name__}")
    if servicer.__name__ != service.name.removesuffix("Service") + "Servicer":
        problems.append(f"{servicer.__name__} is not named {service.name.removesuffix('Service')}Servicer")
    own = _own_public_names(servicer, base)
    problems += [f"{name} is not an RPC of {service.name}" for name in sorted(own - rpcs)]
    for method in service.methods:
        behavior = getattr(servicer, method.name, None)
        if method.name not in own:
            problems.append(f"{method.name} is neither implemented nor marked UNIMPLEMENTED")
        elif behavior is not UNIMPLEMENTED:
            is_async = (
                inspect.isasyncgenfunction(behavior)
                if method.server_streaming
                else inspect.iscoroutinefunction(behavior)
            )
            if not is_async:
                problems.append(
                    f"{method.name} is not an async {'generator' if method.server_streaming else 'def'}"
                )
    return problems


def test_the_generated_bases_are_the_contract() -> None:
    # The check below leans on the bases having one method per RPC, and no more.
    for _, base, service in SERVICERS:
        assert {n for n in vars(base) if not n.startswith("_")} == {m.name for m in service.methods}


@pytest.mark.parametrize(("servicer", "base", "service"), SERVICERS, ids=_IDS)
def test_each_servicer_holds_exactly_its_contracts_rpcs(
    servicer: type, base: type, service: descriptor.ServiceDescriptor
) -> None:
    assert rpc_mismatches(servicer, base, service) == []


def test_a_misspelt_or_missing_method_is_caught() -> None:
    base = apikey_service_pb2_grpc.ApiKeyServiceServicer
    service = apikey_service_pb2.DESCRIPTOR.services_by_name["ApiKeyService"]
    misspelt = type(
        "ApiKeyServicer",
        (ApiKeyServicer,),
        {"ListApiKey": ApiKeyServicer.ListApiKeys},
    )
    assert rpc_mismatches(misspelt, base, service) == ["ListApiKey is not an RPC of ApiKeyService"]
    partial = type(
        "ApiKeyServicer",
        (base,),
        {name: getattr(ApiKeyServicer, name) for name in vars(ApiKeyServicer) if name != "ListApiKeys"},
    )
    assert rpc_mismatches(partial, base, service) == [
        "ListApiKeys is neither implemented nor marked UNIMPLEMENTED"
    ]


async def _answer(servicer: object, service: descriptor.ServiceDescriptor, name: str) -> str:
    """What a unary RPC answers through app/handlers.py when its servicer does not build it."""
    handler = service_handler(service, servicer).service(
        SimpleNamespace(method=f"/{service.full_name}/{name}")
    )
    request_cls = getattr(events_service_pb2, service.methods_by_name[name].input_type.name)
    with pytest.raises(Unimplemented) as raised:
        await handler.unary_unary(request_cls(), None)
    return raised.value.message


async def test_an_rpc_marked_unimplemented_answers_unimplemented_naming_it() -> None:
    # Every RPC is built now; the mark stays for the next capability under way.
    service = events_service_pb2.DESCRIPTOR.services_by_name["EventsService"]
    marked: type[EventsServicer] = type("Marked", (EventsServicer,), {"CreateWebhookEndpoint": UNIMPLEMENTED})
    servicer = object.__new__(marked)  # the marks are on the class
    message = await _answer(servicer, service, "CreateWebhookEndpoint")
    assert message == "nexus.events.v1.EventsService.CreateWebhookEndpoint is not implemented yet"


async def test_an_rpc_left_to_the_generated_base_answers_unimplemented_naming_it() -> None:
    # The base's own method would set a bare UNIMPLEMENTED and raise NotImplementedError,
    # which the chain would answer as INTERNAL.
    service = events_service_pb2.DESCRIPTOR.services_by_name["EventsService"]
    bare = type("Bare", (events_service_pb2_grpc.EventsServiceServicer,), {})()
    message = await _answer(bare, service, "GetEvent")
    assert message == "nexus.events.v1.EventsService.GetEvent is not implemented yet"
