"""Typed domain errors. Domain code raises these; one interceptor maps them to gRPC status.

    NexusError                      reason, message, metadata -> google.rpc.ErrorInfo
    ├── InvalidArgument             + field violations       -> INVALID_ARGUMENT + BadRequest
    ├── Unauthenticated                                      -> UNAUTHENTICATED
    ├── PermissionDenied                                     -> PERMISSION_DENIED
    ├── NotFound                                             -> NOT_FOUND
    ├── AlreadyExists                                        -> ALREADY_EXISTS
    ├── FailedPrecondition          + precondition violations -> FAILED_PRECONDITION + PreconditionFailure
    ├── ResourceExhausted           + retry_after, quota     -> RESOURCE_EXHAUSTED + RetryInfo + QuotaFailure
    ├── OutOfRange                                           -> OUT_OF_RANGE
    ├── Unimplemented                                        -> UNIMPLEMENTED
    ├── Unavailable                                          -> UNAVAILABLE
    └── Aborted                                              -> ABORTED

Reasons are the value names of the `ErrorReason` enums in proto/ (common and per service);
a contract test checks every reason raised here exists there. Nothing here imports grpc.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class FieldViolation:
    """One bad field: `field` is a dotted path into the request (`records[3].metric`)."""

    field: str
    description: str


@dataclass(frozen=True)
class PreconditionViolation:
    """One unmet precondition, e.g. type `CREDITS`, subject `ten_…`, description."""

    type: str
    subject: str
    description: str


@dataclass(frozen=True)
class QuotaViolation:
    """Which limit was hit: subject (`apikey:eco_api_…`) and a description with the limit."""

    subject: str
    description: str


class NexusError(Exception):
    """Base of every expected error. `reason` is an ErrorReason name; `metadata` goes to ErrorInfo."""

    default_reason = "INTERNAL_ERROR"

    def __init__(self, message: str, *, reason: str | None = None, metadata: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = dict(metadata or {})


class InvalidArgument(NexusError):
    default_reason = "INVALID_REQUEST"

    def __init__(
        self,
        violations: list[FieldViolation] | FieldViolation,
        message: str | None = None,
        *,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
    ):
        self.violations = [violations] if isinstance(violations, FieldViolation) else list(violations)
        if message is None:
            message = "; ".join(f"{v.field}: {v.description}" for v in self.violations) or "invalid request"
        super().__init__(message, reason=reason, metadata=metadata)


class Unauthenticated(NexusError):
    default_reason = "CREDENTIALS_INVALID"


class PermissionDenied(NexusError):
    default_reason = "ROLE_REQUIRED"


class NotFound(NexusError):
    default_reason = "RESOURCE_NOT_FOUND"


class AlreadyExists(NexusError):
    default_reason = "RESOURCE_ALREADY_EXISTS"


class FailedPrecondition(NexusError):
    def __init__(
        self,
        message: str,
        *,
        reason: str,
        violations: list[PreconditionViolation] | None = None,
        metadata: dict[str, str] | None = None,
    ):
        super().__init__(message, reason=reason, metadata=metadata)
        self.violations = list(violations or [])


class ResourceExhausted(NexusError):
    default_reason = "RATE_LIMITED"

    def __init__(
        self,
        message: str,
        *,
        retry_after: timedelta,
        violations: list[QuotaViolation] | None = None,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
    ):
        super().__init__(message, reason=reason, metadata=metadata)
        self.retry_after = retry_after
        self.violations = list(violations or [])


class OutOfRange(NexusError):
    """A position past the end of what exists (a sequence beyond a log's head)."""

    default_reason = "INVALID_REQUEST"


class Unimplemented(NexusError):
    default_reason = "NOT_IMPLEMENTED"


class Unavailable(NexusError):
    default_reason = "SERVER_STOPPING"


class Aborted(NexusError):
    """A conflict with concurrent work (a billing cycle already running): retry later. The
    reason is the caller's: there is no generic one."""

    def __init__(self, message: str, *, reason: str, metadata: dict[str, str] | None = None):
        super().__init__(message, reason=reason, metadata=metadata)
