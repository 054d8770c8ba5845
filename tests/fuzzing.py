"""The shared harness of the fuzz tests: hypothesis strategies for any request message built
from its descriptor (each service passes its own pool of strings), the unknown-field bytes a
newer client might append, raw calls that send those bytes, and the checks every refusal must
pass. What a service's RPCs may change (its snapshot) and its credentials stay in its test."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import grpc
from google.protobuf import descriptor, message_factory
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from nexus_server import contract
from tests.support import field_violations

FD = descriptor.FieldDescriptor
INT_RANGES = {
    FD.TYPE_INT32: (-(2**31), 2**31 - 1),
    FD.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FD.TYPE_INT64: (-(2**63), 2**63 - 1),
    FD.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FD.TYPE_UINT32: (0, 2**32 - 1),
    FD.TYPE_UINT64: (0, 2**64 - 1),
    FD.TYPE_ENUM: (-(2**31), 2**31 - 1),  # beyond the declared values too: an unknown enum
}
# An unknown field (number 1234, varint) a newer client might send.
UNKNOWN_FIELD = b"\x90\x4d\x01"
NEVER = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)


def fuzz_settings(max_examples: int) -> settings:
    """Settings for @given on an async test with the session's fixtures: no deadline (a call
    takes what the shared server needs) and no complaint about function-scoped fixtures (the
    fixtures are the server and credentials, meant to outlive every example)."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


def service_methods(service: str) -> list[descriptor.MethodDescriptor]:
    """The RPCs of `service` (its full name, e.g. "nexus.apikey.v1.ApiKeyService")."""
    return [m for s in contract.services() if s.full_name == service for m in s.methods]


def _value(
    field: descriptor.FieldDescriptor, strings: st.SearchStrategy[str], depth: int, max_repeated: int
) -> st.SearchStrategy[Any]:
    if field.type == FD.TYPE_MESSAGE:
        assert field.message_type is not None  # a message field always names its type
        return messages(field.message_type, strings, depth=depth + 1, max_repeated=max_repeated)
    if field.type == FD.TYPE_STRING:
        return strings
    if field.type == FD.TYPE_BYTES:
        return st.binary(max_size=64)
    if field.type == FD.TYPE_BOOL:
        return st.booleans()
    if field.type in INT_RANGES:
        lo, hi = INT_RANGES[field.type]
        return st.one_of(st.integers(lo, hi), st.integers(-5, 2000), st.sampled_from([lo, hi]))
    return st.floats(allow_nan=True)


def messages(
    desc: descriptor.Descriptor, strings: st.SearchStrategy[str], *, depth: int = 0, max_repeated: int = 25
) -> st.SearchStrategy[Any]:
    """Messages of type `desc`: each field present or missing, strings from `strings`,
    numbers anywhere in their range (and the extremes), nested messages four levels deep."""
    cls = message_factory.GetMessageClass(desc)
    if depth > 3:
        return st.just(cls())
    fields = {
        f.name: (
            st.lists(_value(f, strings, depth, max_repeated), max_size=max_repeated)
            if f.is_repeated
            else _value(f, strings, depth, max_repeated)
        )
        for f in desc.fields
        if not (
            f.type == FD.TYPE_MESSAGE and f.message_type is not None and f.message_type.GetOptions().map_entry
        )
    }

    @st.composite
    def build(draw: st.DrawFn) -> Any:
        message = cls()
        for name, strategy in fields.items():
            if not draw(st.booleans()):
                continue  # a missing field
            value = draw(strategy)
            target = desc.fields_by_name[name]
            if target.is_repeated:
                getattr(message, name).extend(value)
            elif target.type == FD.TYPE_MESSAGE:
                getattr(message, name).CopyFrom(value)
            else:
                setattr(message, name, value)
        return message

    return build()


def wire(
    desc: descriptor.Descriptor, strings: st.SearchStrategy[str], *, max_repeated: int = 25
) -> st.SearchStrategy[bytes]:
    """A generated message's bytes, sometimes followed by an unknown field."""
    return st.builds(
        lambda message, unknown: message.SerializeToString() + (UNKNOWN_FIELD if unknown else b""),
        messages(desc, strings, max_repeated=max_repeated),
        st.booleans(),
    )


def raw_call(channel: grpc.aio.Channel, method: descriptor.MethodDescriptor) -> Any:
    """A unary call of `method` that sends and answers bytes as they are."""
    return channel.unary_unary(
        contract.method_path(method), request_serializer=None, response_deserializer=None
    )


def assert_not_internal(error: grpc.RpcError, context: str = "") -> grpc.StatusCode:
    """Bad input is the caller's fault: never INTERNAL or UNKNOWN."""
    code: grpc.StatusCode = error.code()
    assert code not in NEVER, f"{context}{code}: {error.details()}"
    return code


def check_refusal(
    error: grpc.RpcError, allowed: Collection[grpc.StatusCode] | None = None
) -> grpc.StatusCode:
    """A refusal of generated input: not INTERNAL or UNKNOWN, one of `allowed` (when given),
    and an INVALID_ARGUMENT names the bad fields. Returns its code."""
    code = assert_not_internal(error)
    if allowed is not None:
        assert code in allowed, f"{code}: {error.details()}"
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        assert field_violations(error), "INVALID_ARGUMENT names the bad fields"
    return code
