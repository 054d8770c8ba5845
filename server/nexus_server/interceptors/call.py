"""What the layers of the chain know about one call, created once per RPC."""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc

from nexus_server.auth.principal import Principal, TenantStatus
from nexus_server.common.errors import Unauthenticated
from nexus_server.ratelimit.limits import Decision

if TYPE_CHECKING:
    from nexus_server.interceptors.streams import Watch  # which imports this module

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
        "tenant_is_callers",
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
        self.principal: Principal | None = None
        self.tenant_id = ""
        # Whether `tenant_id` is the caller's own: a key's tenant, one their membership was
        # checked in, or the one their token was issued for. RPCs open to anyone signed in
        # take x-tenant-id unchecked, and what is unchecked must not be charged to a tenant.
        self.tenant_is_callers = False
        # The tenant's status as authentication found it for this call, when
        # it looked it up: later checks in the same call need not ask the directory again.
        self.tenant_status: TenantStatus | None = None
        # What the rate-limit layer charged for this call.
        self.rate_limits: Decision | None = None
        # Header-like metadata (rate-limit fields): initial metadata for streams and for
        # requests transcoded from HTTP/JSON by Envoy, trailers for other unary calls.
        self.response_metadata: list[tuple[str, str]] = []
        # Trailers for the response (request id): cheap, ride with the status.
        self.trailing_metadata: list[tuple[str, str]] = []
        # An open stream's watch (interceptors/streams.py): its `error` is set when the
        # stream's credential stops holding and the stream must end.
        self.watch: Watch | None = None

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def require_principal(self) -> Principal:
        """The caller, for the RPCs that have one. The authentication layer admits no
        non-public RPC without one; if a call reached here without, it is refused (closed)
        rather than served as nobody."""
        principal = self.principal
        if principal is None:
            raise Unauthenticated("this RPC needs credentials", reason="CREDENTIALS_MISSING")
        return principal


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


def current_principal() -> Principal:
    """The caller of the call being served, for servicers of RPCs that require one."""
    return _current.get().require_principal()


def set_current_call(call: Call) -> None:
    _current.set(call)
