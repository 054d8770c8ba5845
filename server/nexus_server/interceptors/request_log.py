"""Request ids and one JSON log line per call."""

from __future__ import annotations

import itertools
import logging
import secrets

import grpc

from nexus_server import logs
from nexus_server.interceptors.call import Call

log = logging.getLogger(logs.ACCESS_LOGGER)
# StatusCode → its name: an Enum member's `.name` is a descriptor call, on every line.
CODE_NAMES = {code: code.name for code in grpc.StatusCode}
_QUIET_SERVICES = frozenset({"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"})
# Request ids name calls in logs and traces; they are not secrets, so they need uniqueness,
# not unpredictability: 72 random bits drawn once per process, then a counter. Drawing
# random bytes for every call was a syscall per call.
_PREFIX = "req_" + secrets.token_urlsafe(9)
_counter = itertools.count(1)


class RequestLog:
    """Adopts the caller's (or Envoy's) `x-request-id`, or makes one; echoes it; logs the outcome."""

    def before(self, call: Call) -> None:
        rid = call.metadata.get("x-request-id", "")
        if not rid or len(rid) > 128 or not rid.isprintable():
            rid = f"{_PREFIX}{next(_counter):x}"
        call.request_id = rid
        # Read the peer now, while the call is certainly alive: a stream whose client went
        # away can be finalized (its generator closed) after grpc has freed the call, and
        # context.peer() then crashes the process (SIGSEGV, measured with abrupt disconnects).
        call.peer = call.context.peer()
        # A trailer, not a header: sending initial metadata is its own write (~60 µs a
        # call). Envoy echoes its own x-request-id to HTTP clients.
        call.trailing_metadata.append(("x-request-id", rid))

    def after(self, call: Call) -> None:
        level = logging.DEBUG if call.method.service in _QUIET_SERVICES else logging.INFO
        if not log.isEnabledFor(level):
            return
        fields = {
            "request_id": call.request_id,
            "method": call.method.full_name,
            "code": CODE_NAMES[call.code],
            "reason": call.error_reason or None,
            "duration_ms": round(call.elapsed() * 1000, 3),
            "peer": call.peer,
            "tenant_id": call.tenant_id or None,
        }
        handler = logs.sole_handler(log)
        if handler is not None:
            # The same line, without a LogRecord (about a third of the line's cost).
            handler.emit_access(level, fields)
            return
        # Logger.log's work without its stack walk to find the caller (always this line)
        # and without makeRecord's check of each extra field (these never clash).
        record = logging.LogRecord(log.name, level, __file__, _LINE, "rpc", (), None, "after")
        record.__dict__.update(fields)
        log.handle(record)


_LINE = RequestLog.after.__code__.co_firstlineno
