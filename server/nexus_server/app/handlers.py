"""gRPC handlers built from the descriptor, so a servicer implements only what exists.

A method the servicer does not define, or marks UNIMPLEMENTED (common/unimplemented.py),
answers UNIMPLEMENTED naming the RPC: honest while a capability is being built.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import descriptor, message_factory
from google.protobuf.message import DecodeError

from nexus_server.common.errors import Unimplemented
from nexus_server.common.unimplemented import is_unimplemented
from nexus_server.interceptors.call import Undecodable


def _unimplemented(method: descriptor.MethodDescriptor) -> Any:
    name = f"{method.containing_service.full_name}.{method.name}"

    async def unary(request: Any, context: Any) -> Any:
        raise Unimplemented(f"{name} is not implemented yet")

    async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
        raise Unimplemented(f"{name} is not implemented yet")
        yield  # pragma: no cover - makes this an async generator

    return stream if method.server_streaming else unary


def _parser(request_cls: Any) -> Any:
    name = request_cls.DESCRIPTOR.full_name

    def parse(data: bytes) -> Any:
        try:
            return request_cls.FromString(data)
        except DecodeError as error:
            return Undecodable(name, str(error))

    return parse


def _stream_serializer(response_cls: Any) -> Any:
    serialize = response_cls.SerializeToString

    def serializer(message: Any) -> bytes:
        # A server stream may send bytes it serialized once for many streams (events
        # fan-out: one event, a thousand subscribers).
        return message if message.__class__ is bytes else serialize(message)  # type: ignore[no-any-return,unused-ignore]

    return serializer


def service_handler(service: descriptor.ServiceDescriptor, servicer: object | None) -> grpc.GenericRpcHandler:
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in service.methods:
        request_cls = message_factory.GetMessageClass(method.input_type)
        response_cls = message_factory.GetMessageClass(method.output_type)
        behavior = getattr(servicer, method.name, None)
        if behavior is None or is_unimplemented(behavior):
            behavior = _unimplemented(method)
        kwargs = {
            "request_deserializer": _parser(request_cls),
            "response_serializer": (
                _stream_serializer(response_cls)
                if method.server_streaming
                else response_cls.SerializeToString
            ),
        }
        if method.client_streaming and method.server_streaming:
            handlers[method.name] = grpc.stream_stream_rpc_method_handler(behavior, **kwargs)
        elif method.client_streaming:
            handlers[method.name] = grpc.stream_unary_rpc_method_handler(behavior, **kwargs)
        elif method.server_streaming:
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(behavior, **kwargs)
        else:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(behavior, **kwargs)
    return grpc.method_handlers_generic_handler(service.full_name, handlers)
