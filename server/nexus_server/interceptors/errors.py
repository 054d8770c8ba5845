"""The one place where errors become gRPC status: typed domain errors and the unexpected.

Domain errors map to their status code with `google.rpc` details (ErrorInfo always;
BadRequest, PreconditionFailure, RetryInfo + QuotaFailure where they apply). Anything else
is INTERNAL carrying only the request id; its stack goes to the log, never to the client.
"""

from __future__ import annotations

import logging

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from nexus_server.common import errors as e
from nexus_server.interceptors.call import Call

DOMAIN = "nexus.dev"
# Error text can echo what the caller sent; cap it so a huge bad value cannot push the
# status details past gRPC's metadata limits (8 KiB soft) or be reflected back whole.
_TEXT_LIMIT = 300
_MAX_VIOLATIONS = 20


def _cap(text: str) -> str:
    return text if len(text) <= _TEXT_LIMIT else text[: _TEXT_LIMIT - 1] + "…"


log = logging.getLogger("nexus.errors")

_CODES: list[tuple[type[e.NexusError], grpc.StatusCode]] = [
    (e.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (e.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (e.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (e.NotFound, grpc.StatusCode.NOT_FOUND),
    (e.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (e.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (e.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (e.OutOfRange, grpc.StatusCode.OUT_OF_RANGE),
    (e.Unimplemented, grpc.StatusCode.UNIMPLEMENTED),
    (e.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (e.Aborted, grpc.StatusCode.ABORTED),
]


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def status_code_of(error: e.NexusError) -> grpc.StatusCode:
    for cls, code in _CODES:
        if isinstance(error, cls):
            return code
    return grpc.StatusCode.INTERNAL


def to_status(error: BaseException, call: Call) -> tuple[grpc.StatusCode, status_pb2.Status]:
    """Map any exception to (code, google.rpc.Status with details)."""
    if not isinstance(error, e.NexusError):
        log.error(
            "unexpected error in %s",
            call.method.full_name,
            exc_info=error,
            extra={"request_id": call.request_id},
        )
        error = e.NexusError(f"internal error; request id {call.request_id}", reason="INTERNAL_ERROR")
    code = status_code_of(error)
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN, metadata=error.metadata)
    if call.request_id:
        info.metadata["request_id"] = call.request_id
    details = [_pack(info)]
    if isinstance(error, e.InvalidArgument):
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=_cap(v.field), description=_cap(v.description), reason=error.reason
                        )
                        for v in error.violations[:_MAX_VIOLATIONS]
                    ]
                )
            )
        )
    elif isinstance(error, e.FailedPrecondition) and error.violations:
        details.append(
            _pack(
                error_details_pb2.PreconditionFailure(
                    violations=[
                        error_details_pb2.PreconditionFailure.Violation(
                            type=v.type, subject=v.subject, description=v.description
                        )
                        for v in error.violations
                    ]
                )
            )
        )
    elif isinstance(error, e.ResourceExhausted):
        delay = duration_pb2.Duration()
        delay.FromTimedelta(error.retry_after)
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
        details.append(
            _pack(
                error_details_pb2.QuotaFailure(
                    violations=[
                        error_details_pb2.QuotaFailure.Violation(subject=v.subject, description=v.description)
                        for v in error.violations
                    ]
                )
            )
        )
    message = _cap(error.message)
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=details)
    return code, status
