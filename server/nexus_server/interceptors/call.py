"""What the layers of the chain know about one call, created once per RPC."""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeAlias

import grpc

# What grpc.aio hands the chain and each servicer method for one call.
ServicerContext: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


@dataclass(frozen=True)
class MethodInfo:
    """Static facts about a method, computed once per method (not per call)."""

    full_name: str  # "/nexus.tenant.v1.TenantService/CreateTenant"
    service: str  # "nexus.tenant.v1.TenantService"
    name: str  # "CreateTenant"
    is_nexus: bool  # False for grpc.health / reflection
    streaming: bool
    access: Any = None  # nexus.common.v1.AccessRule, filled by the access table

    @classmethod
    def parse(cls, full_name: str, *, streaming: bool, access: Any = None) -> MethodInfo:
        service, _, name = full_name.lstrip("/").partition("/")
        return cls(full_name, service, name, service.startswith("nexus."), streaming, access)


class Call:
    """Mutable per-call state shared by the layers: request id, principal, outcome.

    A plain class with slots rather than a dataclass: one is made for every RPC, and this
    builds in a fraction of the time."""

    __slots__ = (
        "code",
        "context",
        "error_reason",
        "metadata",
        "method",
        "peer",
        "principal",
        "rate_limits",
        "request",
        "request_id",
        "response_metadata",
        "started",
        "tenant_id",
        "tenant_status",
        "trailing_metadata",
        "watch",
    )

    def __init__(
        self,
        method: MethodInfo,
        context: ServicerContext,
        metadata: dict[str, str],
        request_id: str = "",
        peer: str = "",
        request: Any = None,
    ):
        self.method = method
        self.context = context
        self.metadata = metadata
        self.request_id = request_id
        self.peer = peer
        # The request message of unary and server-streaming calls (None for client streams).
        self.request = request
        self.started = time.perf_counter()
        self.code: grpc.StatusCode = grpc.StatusCode.OK
        self.error_reason = ""
        # Filled by authentication (issue 4/5): who is calling and for which tenant.
        self.principal: Any = None
        self.tenant_id = ""
        # The tenant's status as authentication found it for this call (TenantStatus), when
        # it looked it up: later checks in the same call need not ask the directory again.
        self.tenant_status: Any = None
        # What the rate-limit layer charged for this call (ratelimit.limits.Decision).
        self.rate_limits: Any = None
        # Header-like metadata (rate-limit fields): initial metadata for streams and for
        # requests transcoded from HTTP/JSON by Envoy, trailers for other unary calls.
        self.response_metadata: list[tuple[str, str]] = []
        # Trailers for the response (request id): cheap, ride with the status.
        self.trailing_metadata: list[tuple[str, str]] = []
        # An open stream's watch (interceptors/streams.py): its `error` is set when the
        # stream's credential stops holding and the stream must end.
        self.watch: Any = None

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


@dataclass(frozen=True)
class Undecodable:
    """A request whose bytes did not parse (for example a Struct nested past protobuf's depth
    limit): handed to the chain instead of failing in grpc, which would answer UNKNOWN, so
    that bad input gets INVALID_ARGUMENT like any other."""

    message_type: str
    error: str


_current: ContextVar[Call] = ContextVar("nexus_call")


def current_call() -> Call:
    """The call being served (each RPC runs in its own task, so this is per call).
    Servicers read `principal` and `tenant_id` from it."""
    return _current.get()


def set_current_call(call: Call) -> None:
    _current.set(call)
