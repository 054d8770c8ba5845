"""Domain errors become the right status code and google.rpc details; surprises leak nothing."""

from __future__ import annotations

import logging
from datetime import timedelta

import grpc
import pytest
from google.rpc import error_details_pb2

from nexus_server.common import errors as e
from nexus_server.interceptors.call import Call, MethodInfo
from nexus_server.interceptors.errors import to_status
from tests.support import status_detail


class _Ctx:
    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"


def _call() -> Call:
    info = MethodInfo.parse("/nexus.tenant.v1.TenantService/GetTenant", streaming=False)
    return Call(info, _Ctx(), {}, request_id="req_test")


def test_invalid_argument_carries_field_violations_and_error_info() -> None:
    err = e.InvalidArgument([e.FieldViolation("slug", "must be a DNS label")])
    code, status = to_status(err, _call())
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    info = status_detail(status, error_details_pb2.ErrorInfo)
    assert (info.reason, info.domain, info.metadata["request_id"]) == (
        "INVALID_REQUEST",
        "nexus.dev",
        "req_test",
    )
    bad = status_detail(status, error_details_pb2.BadRequest)
    assert [(v.field, v.description) for v in bad.field_violations] == [("slug", "must be a DNS label")]


def test_resource_exhausted_carries_retry_and_quota_failure() -> None:
    err = e.ResourceExhausted(
        "slow down",
        retry_after=timedelta(seconds=3),
        violations=[e.QuotaViolation("apikey:eco_api_x", "100 per minute")],
    )
    code, status = to_status(err, _call())
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert status_detail(status, error_details_pb2.RetryInfo).retry_delay.seconds == 3
    assert status_detail(status, error_details_pb2.QuotaFailure).violations[0].subject == "apikey:eco_api_x"
    assert status_detail(status, error_details_pb2.ErrorInfo).reason == "RATE_LIMITED"


def test_failed_precondition_carries_precondition_failure() -> None:
    err = e.FailedPrecondition(
        "not enough credits",
        reason="INSUFFICIENT_CREDITS",
        violations=[e.PreconditionViolation("CREDITS", "ten_x", "balance 3 < 5")],
    )
    code, status = to_status(err, _call())
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert status_detail(status, error_details_pb2.PreconditionFailure).violations[0].type == "CREDITS"
    assert status_detail(status, error_details_pb2.ErrorInfo).reason == "INSUFFICIENT_CREDITS"


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (e.Unauthenticated("no"), grpc.StatusCode.UNAUTHENTICATED),
        (e.PermissionDenied("no", reason="TENANT_SUSPENDED"), grpc.StatusCode.PERMISSION_DENIED),
        (e.NotFound("no"), grpc.StatusCode.NOT_FOUND),
        (e.AlreadyExists("no"), grpc.StatusCode.ALREADY_EXISTS),
        (e.Unimplemented("no"), grpc.StatusCode.UNIMPLEMENTED),
        (e.Unavailable("no"), grpc.StatusCode.UNAVAILABLE),
    ],
)
def test_each_domain_error_has_its_code(error: e.NexusError, code: grpc.StatusCode) -> None:
    assert to_status(error, _call())[0] == code


def test_unexpected_exception_is_internal_and_leaks_nothing(caplog: pytest.LogCaptureFixture) -> None:
    secret = "password=hunter2 at /srv/db"
    with caplog.at_level(logging.ERROR, logger="nexus.errors"):
        code, status = to_status(RuntimeError(secret), _call())
    assert code == grpc.StatusCode.INTERNAL
    assert secret not in status.SerializeToString().decode("latin-1")
    assert "req_test" in status.message
    assert status_detail(status, error_details_pb2.ErrorInfo).reason == "INTERNAL_ERROR"
    assert any(r.exc_info for r in caplog.records), "the stack must be logged for operators"


def test_echoed_input_is_capped_so_details_stay_small() -> None:
    huge = "x" * 100_000
    err = e.InvalidArgument([e.FieldViolation(f"f{i}", f"bad value {huge}") for i in range(500)])
    _, status = to_status(err, _call())
    assert len(status.SerializeToString()) < 8_000
    bad = status_detail(status, error_details_pb2.BadRequest)
    assert 0 < len(bad.field_violations) <= 20
