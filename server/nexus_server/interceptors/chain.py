"""One grpc.aio interceptor that runs every layer around every method.

Stacking one grpc interceptor per concern would re-wrap the handler on every call; here
the wrapped handler is built once per method and cached, and each call pays one closure
and a loop over the layers. Order (DESIGN.md): request id and logging → metrics → error
mapping → authentication → tenant → rate limit → metering. Error mapping lives here,
around everything after it, because it must see what every later layer raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from nexus_server.common.errors import FieldViolation, InvalidArgument, Unavailable
from nexus_server.interceptors.call import Call, MethodInfo, Undecodable, set_current_call
from nexus_server.interceptors.errors import to_status
from nexus_server.interceptors.layer import Layer, nothing_after
from nexus_server.interceptors.streams import StreamGuard

# grpc.RpcMethodHandler; grpc is untyped for mypy here (see pyproject).
Handler = Any

# Envoy's JSON transcoder marks the requests it makes. For unary JSON it turns only
# grpc-status/grpc-message into HTTP headers and drops other trailers (measured), so
# header metadata (rate-limit fields) must go as initial metadata there; native gRPC and
# gRPC-web clients read trailers, which ride with the status and save a write per call.
_TRANSCODED = "x-envoy-original-path"


class Chain(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(
        self,
        layers: Sequence[Layer],
        access_rules: dict[str, Any] | None = None,
        *,
        guard: StreamGuard | None = None,
    ):
        self._layers = list(layers)
        # Ends open streams whose credential stops holding (streams.py).
        self._guard = guard
        self._reversed = list(reversed(self._layers))
        # A layer whose `before` never waits may be a plain function: called directly, it
        # costs no coroutine per call.
        self._befores: list[tuple[Callable[[Call], Any], bool]] = [
            (layer.before, inspect.iscoroutinefunction(layer.before)) for layer in self._layers
        ]
        self._afters = [layer.after for layer in self._reversed if layer.after is not nothing_after]
        self._access = access_rules or {}
        self._cache: dict[str, tuple[Handler, Handler]] = {}
        self.stopping = False
        self._streams: set[asyncio.Task[Any]] = set()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(details)
        if handler is None:
            return handler
        cached = self._cache.get(details.method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(details.method, handler)
        self._cache[details.method] = (handler, wrapped)
        return wrapped

    def stop_streams(self) -> None:
        """Begin a graceful stop: every open stream ends with UNAVAILABLE so clients resume."""
        self.stopping = True
        for task in list(self._streams):
            task.cancel()

    def _call(self, info: MethodInfo, context: Any, request: Any) -> Call:
        call = Call(info, context, dict(context.invocation_metadata() or ()), request=request)
        set_current_call(call)
        return call

    async def _before(self, call: Call) -> None:
        if isinstance(call.request, Undecodable):
            bad = call.request
            raise InvalidArgument(FieldViolation("request", f"not a valid {bad.message_type}: {bad.error}"))
        for before, waits in self._befores:
            if waits:
                await before(call)
            else:
                before(call)

    def _after(self, call: Call) -> None:
        for after in self._afters:
            after(call)

    async def _fail(self, call: Call, error: BaseException) -> None:
        if isinstance(error, grpc.aio.AbortError):
            # A servicer aborted by hand (it should raise a domain error instead).
            call.code = call.context.code() or grpc.StatusCode.UNKNOWN
            raise error
        code, status = to_status(error, call)
        call.code = code
        call.error_reason = _reason(status)
        grpc_status = rpc_status.to_status(status)
        await call.context.abort(
            code,
            status.message,
            (*grpc_status.trailing_metadata, *call.response_metadata, *call.trailing_metadata),
        )

    def _wrap(self, method: str, handler: Handler) -> Handler:
        streaming_out = bool(handler.response_streaming)
        info = MethodInfo.parse(
            method,
            streaming=streaming_out or bool(handler.request_streaming),
            access=self._access.get(method),
        )
        kwargs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(self._unary(info, handler.unary_unary), **kwargs)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(self._unary(info, handler.stream_unary), **kwargs)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(self._stream(info, handler.unary_stream), **kwargs)
        return grpc.stream_stream_rpc_method_handler(self._stream(info, handler.stream_stream), **kwargs)

    def _unary(self, info: MethodInfo, behavior: Any) -> Any:
        async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            call = self._call(info, context, None if info.streaming else request)
            try:
                await self._before(call)
                if call.response_metadata:
                    if _TRANSCODED in call.metadata:
                        await context.send_initial_metadata(call.response_metadata)
                    else:
                        call.trailing_metadata.extend(call.response_metadata)
                    call.response_metadata = []  # delivered; errors must not repeat them
                response = await behavior(request, context)
                context.set_trailing_metadata(call.trailing_metadata)
                return response
            except asyncio.CancelledError:
                call.code = grpc.StatusCode.CANCELLED
                raise
            except Exception as error:
                await self._fail(call, error)
            finally:
                self._after(call)

        return unary

    def _stream(self, info: MethodInfo, behavior: Any) -> Any:
        """Server streams come as async generators or as coroutines that call context.write
        (grpc's own health Watch); both get the same layers and the same graceful stop."""
        if inspect.isasyncgenfunction(behavior):

            async def generator(
                request: Any, context: grpc.aio.ServicerContext[Any, Any]
            ) -> AsyncIterator[Any]:
                call = self._call(info, context, request)
                task = self._enter_stream()
                try:
                    await self._open_stream(call, task)
                    watch = call.watch
                    async with contextlib.aclosing(behavior(request, context)) as items:
                        async for item in items:
                            if watch is not None:
                                watch.raise_if_ended()
                            yield item
                except BaseException as error:
                    await self._end_stream(call, task, error)
                finally:
                    self._exit_stream(call, task)

            return generator

        async def writer(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
            call = self._call(info, context, request)
            task = self._enter_stream()
            try:
                await self._open_stream(call, task)
                await behavior(request, context)
            except BaseException as error:
                await self._end_stream(call, task, error)
            finally:
                self._exit_stream(call, task)

        return writer

    def _enter_stream(self) -> asyncio.Task[Any] | None:
        task = asyncio.current_task()
        if task is not None:
            self._streams.add(task)
        return task

    def _exit_stream(self, call: Call, task: asyncio.Task[Any] | None) -> None:
        if task is not None:
            self._streams.discard(task)
        if call.watch is not None and self._guard is not None:
            self._guard.close(call.watch)
        self._after(call)

    async def _open_stream(self, call: Call, task: asyncio.Task[Any] | None) -> None:
        if self.stopping:
            raise Unavailable("server is stopping; reconnect to another replica")
        guard = self._guard
        rows_before = guard.rows if guard is not None else 0
        await self._before(call)
        if guard is not None:
            # Watched from the moment it is admitted: no await between the two.
            call.watch = guard.watch(call, task, rows_before=rows_before)
        if call.response_metadata:
            await call.context.send_initial_metadata(call.response_metadata)
            call.response_metadata = []
        call.context.set_trailing_metadata(call.trailing_metadata)

    async def _end_stream(self, call: Call, task: asyncio.Task[Any] | None, error: BaseException) -> None:
        if isinstance(error, asyncio.CancelledError):
            if task is None or not (self.stopping or (call.watch is not None and call.watch.error)):
                call.code = grpc.StatusCode.CANCELLED
                raise error
            task.uncancel()
            if call.watch is not None and call.watch.error is not None:
                # The guard cancelled a stream that waits where it cannot be woken.
                error = call.watch.error
            else:
                error = Unavailable("server is stopping; resume from your last sequence")
        elif not isinstance(error, Exception):
            raise error
        await self._fail(call, error)


def _reason(status: Any) -> str:

    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return str(info.reason)
    return ""
