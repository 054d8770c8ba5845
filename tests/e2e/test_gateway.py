"""Envoy in front of a real `nexus serve`: config validity, gRPC, JSON transcoding, CORS, health.

The processes come from conftest (one server and one Envoy for the session).
"""

from __future__ import annotations

import json
import re
import struct
import subprocess
import time
import uuid
from typing import Any

import pytest

from nexus_server.contract import SERVICES
from nexus_server.gateway.envoy_config import envoy_command

from .conftest import Response, Stack, http_get_text, run_grpcurl

pytestmark = pytest.mark.e2e

# Envoy's gRPC → HTTP status mapping (grpcToHttpStatus), for the codes Nexus returns.
HTTP_STATUS_OF_GRPC_CODE = {
    3: 400,  # INVALID_ARGUMENT
    5: 404,  # NOT_FOUND
    6: 409,  # ALREADY_EXISTS
    7: 403,  # PERMISSION_DENIED
    8: 429,  # RESOURCE_EXHAUSTED
    9: 400,  # FAILED_PRECONDITION
    12: 501,  # UNIMPLEMENTED
    13: 500,  # INTERNAL
    14: 503,  # UNAVAILABLE
    16: 401,  # UNAUTHENTICATED
}
ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
MiB = 1024 * 1024


def status_json(response: Response) -> dict[str, Any]:
    """The google.rpc.Status JSON body Envoy made from Nexus's grpc-status-details-bin."""
    assert response.content_type == "application/json", (response.status, response.headers, response.text)
    body: dict[str, Any] = json.loads(response.body)
    return body


def error_info(status: dict[str, Any]) -> dict[str, Any]:
    infos: list[dict[str, Any]] = [d for d in status.get("details", []) if d.get("@type") == ERROR_INFO]
    assert len(infos) == 1, status
    return infos[0]


# --- the config -------------------------------------------------------------------------------


def test_rendered_config_fills_every_placeholder(stack: Stack) -> None:
    text = stack.config_path.read_text()
    assert "${" not in text
    assert f"port_value: {stack.http_port}" in text
    assert f"port_value: {stack.admin_port}" in text
    assert f"port_value: {stack.grpc_port}" in text


def test_envoy_validates_rendered_config_with_all_six_services(stack: Stack) -> None:
    """`envoy --mode validate` builds the transcoder: every service must be in the descriptor."""
    text = stack.config_path.read_text()
    for service in SERVICES:
        assert f"- {service}\n" in text
    result = subprocess.run(
        [*envoy_command(stack.config_path), "--mode", "validate"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"configuration '{stack.config_path}' OK" in result.stdout + result.stderr


def test_envoy_validate_rejects_a_service_missing_from_the_descriptor(stack: Stack, tmp_path: Any) -> None:
    """The validate test above can fail: a service the descriptor lacks is refused."""
    broken = tmp_path / "envoy.yaml"
    broken.write_text(
        stack.config_path.read_text().replace(
            "- nexus.usage.v1.UsageService\n", "- nexus.usage.v1.NoSuchService\n"
        )
    )
    result = subprocess.run(
        [*envoy_command(broken), "--mode", "validate"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "NoSuchService" in result.stdout + result.stderr


# --- gRPC: reflection for grpcurl, directly and through Envoy -------------------------------------


@pytest.mark.parametrize("target", ["server", "envoy"])
def test_grpcurl_lists_services_through_reflection(stack: Stack, target: str) -> None:
    address = stack.grpc_address if target == "server" else stack.envoy_address
    result = run_grpcurl("-plaintext", address, "list")
    assert result.returncode == 0, result.stderr
    listed = set(result.stdout.split())
    assert {*SERVICES, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= listed


def test_grpcurl_describes_tenant_service(stack: Stack) -> None:
    result = run_grpcurl("-plaintext", stack.grpc_address, "describe", "nexus.tenant.v1.TenantService")
    assert result.returncode == 0, result.stderr
    assert "nexus.tenant.v1.TenantService is a service:" in result.stdout
    assert re.search(r"rpc CreateTenant \( \.nexus\.tenant\.v1\.CreateTenantRequest \)", result.stdout)
    assert 'post:"/v1/tenants"' in result.stdout


def test_grpcurl_health_check_through_envoy(stack: Stack) -> None:
    result = run_grpcurl("-plaintext", stack.envoy_address, "grpc.health.v1.Health/Check")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"status": "SERVING"}


# --- JSON through the transcoder -----------------------------------------------------------------


def test_plans_are_public_json_with_exact_money(stack: Stack) -> None:
    response = stack.request("GET", "/v1/plans")
    assert response.status == 200, response.text
    plans = json.loads(response.body)["plans"]
    pro = next(p for p in plans if p["id"] == "pro")
    calls = next(q for q in pro["quotas"] if q["metric"] == "api_calls")
    assert calls["overage_unit_price"] == {"currency_code": "USD", "nanos": 1000000}


def _admin_token(stack: Stack) -> tuple[str, str]:
    """A new person's token and the tenant they own (owners reach admin RPCs)."""
    email = f"gw-{uuid.uuid4().hex[:10]}@example.com"
    password = "Correct-horse-9-battery"
    stack.json("POST", "/v1/auth/register", {"email": email, "password": password})
    _, login = stack.json("POST", "/v1/auth/login", {"email": email, "password": password})
    _, tenant = stack.json(
        "POST",
        "/v1/tenants",
        {"slug": f"gw-{uuid.uuid4().hex[:8]}", "display_name": "Gw"},
        token=login["access_token"],
    )
    return login["access_token"], tenant["id"]


def test_webhook_endpoints_through_json(stack: Stack) -> None:
    """The last RPCs to be built answer through Envoy like the rest: the secret is shown
    once, a refused URL is 400 with its reason on the field."""
    token, tenant_id = _admin_token(stack)
    headers = {
        "authorization": f"Bearer {token}",
        "x-tenant-id": tenant_id,
        "content-type": "application/json",
    }
    made = stack.request(
        "POST",
        "/v1/webhook-endpoints",
        headers=headers,
        body=b'{"url": "https://hooks.example.com/in", "types": ["deal.*"]}',
    )
    assert made.status == 200, made.text
    endpoint = json.loads(made.body)
    assert endpoint["secret"].startswith("whsec_") and endpoint["types"] == ["deal.*"]
    listed = stack.request("GET", "/v1/webhook-endpoints", headers=headers)
    assert [e["id"] for e in json.loads(listed.body)["webhook_endpoints"]] == [endpoint["id"]]
    assert "secret" not in json.loads(listed.body)["webhook_endpoints"][0]  # empty: not shown
    refused = stack.request(
        "POST", "/v1/webhook-endpoints", headers=headers, body=b'{"url": "https://169.254.169.254/latest"}'
    )
    assert refused.status == 400, refused.text
    assert error_info(status_json(refused))["reason"] == "WEBHOOK_URL_NOT_ALLOWED"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/users/me", None),
        ("GET", "/v1/tenants/ten_0000000000000000000000", None),
        ("POST", "/v1/api-keys", b"{}"),
        ("GET", "/v1/admin/revenue", None),
        ("POST", "/v1/auth/login", b"{}"),
    ],
)
def test_nexus_errors_are_json_status_with_mapped_http_code(
    stack: Stack, method: str, path: str, body: bytes | None
) -> None:
    """Requests that fail however far Nexus is built (no credentials, empty login): the HTTP
    status follows the gRPC code and the body is the full google.rpc.Status."""
    response = stack.request(method, path, body=body, headers={"content-type": "application/json"})
    status = status_json(response)
    assert status["code"] in HTTP_STATUS_OF_GRPC_CODE, status
    assert response.status == HTTP_STATUS_OF_GRPC_CODE[status["code"]]
    assert status["message"]
    assert error_info(status)["domain"] == "nexus.dev"


def test_envoy_runs_the_transcoder_with_the_required_options(stack: Stack) -> None:
    """The live config (admin /config_dump), not just the file: the options issue 3 names."""
    full = json.loads(http_get_text(stack.admin_port, "/config_dump") or "{}")
    transcoder = _find_typed_config(full, "GrpcJsonTranscoder")
    assert transcoder["convert_grpc_status"] is True
    assert transcoder["print_options"] == {
        "preserve_proto_field_names": True,
        "stream_sse_style_delimited": True,
    }
    assert transcoder["request_validation_options"] == {
        "reject_unknown_method": True,
        "reject_unknown_query_parameters": True,
    }
    assert sorted(transcoder["services"]) == sorted(SERVICES)


def _find_typed_config(node: Any, type_suffix: str) -> dict[str, Any]:
    """The first typed config in a config dump whose @type ends with `type_suffix`."""
    if isinstance(node, dict):
        if str(node.get("@type", "")).endswith("." + type_suffix):
            return node
        children = list(node.values())
    elif isinstance(node, list):
        children = node
    else:
        children = []
    for child in children:
        try:
            return _find_typed_config(child, type_suffix)
        except LookupError:
            continue
    raise LookupError(type_suffix)


def test_unknown_route_is_404_text_plain_from_transcoder(stack: Stack) -> None:
    response = stack.request("GET", "/v1/no-such-route")
    assert response.status == 404
    assert response.content_type == "text/plain"
    assert response.text == "Could not resolve /v1/no-such-route to a method."


def test_wrong_http_method_on_known_path_is_404_text_plain(stack: Stack) -> None:
    response = stack.request("DELETE", "/v1/plans")
    assert response.status == 404
    assert response.content_type == "text/plain"


def test_unknown_query_parameter_is_400_text_plain(stack: Stack) -> None:
    response = stack.request("GET", "/v1/plans?colour=blue")
    assert response.status == 400
    assert response.content_type == "text/plain"
    assert 'Could not find field "colour"' in response.text


def test_malformed_json_body_is_400_text_plain(stack: Stack) -> None:
    response = stack.request(
        "POST", "/v1/auth/login", body=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status == 400
    assert response.content_type == "text/plain"
    assert not response.text.startswith("{")


def test_every_response_carries_a_generated_request_id(stack: Stack) -> None:
    for path in ("/v1/plans", "/v1/no-such-route"):
        request_id = stack.request("GET", path).headers.get("x-request-id", "")
        assert uuid.UUID(request_id), path


def test_client_request_id_is_kept_and_reaches_nexus(stack: Stack) -> None:
    mine = f"client-{uuid.uuid4()}"
    response = stack.request("GET", "/v1/credit-rates?page_size=-1", headers={"x-request-id": mine})
    assert response.headers["x-request-id"] == mine
    assert error_info(status_json(response))["metadata"]["request_id"] == mine


def test_stripe_webhook_accepts_bodies_over_the_default_1_mib_buffer(stack: Stack) -> None:
    """The webhook route raises the buffer limit: 2 MiB reaches Nexus (JSON Status back)."""
    response = stack.request(
        "POST",
        "/v1/billing/stripe/webhook",
        body=b"x" * (2 * MiB),
        headers={"content-type": "application/json", "stripe-signature": "t=1,v1=00"},
    )
    assert response.status != 413, response.text
    status = status_json(response)
    assert error_info(status)["domain"] == "nexus.dev"


def test_stripe_webhook_refuses_bodies_over_its_8_mib_limit(stack: Stack) -> None:
    response = stack.request(
        "POST",
        "/v1/billing/stripe/webhook",
        body=b"x" * (9 * MiB),
        headers={"content-type": "application/json"},
    )
    assert response.status == 413
    assert response.content_type == "text/plain"


# --- CORS and gRPC-web --------------------------------------------------------------------------


def test_cors_preflight_allows_any_origin(stack: Stack) -> None:
    response = stack.request(
        "OPTIONS",
        "/v1/tenants",
        headers={
            "origin": "http://localhost:5173",
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type",
        },
    )
    assert response.status == 200
    assert response.headers["access-control-allow-origin"] == "http://localhost:5173"
    assert "POST" in response.headers["access-control-allow-methods"]
    allowed = {h.strip() for h in response.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "x-api-key", "x-tenant-id", "x-grpc-web"} <= allowed


def test_cors_response_exposes_grpc_and_rate_limit_headers(stack: Stack) -> None:
    response = stack.request("GET", "/v1/plans", headers={"origin": "https://app.example"})
    assert response.headers["access-control-allow-origin"] == "https://app.example"
    exposed = {h.strip() for h in response.headers["access-control-expose-headers"].split(",")}
    assert {"grpc-status", "grpc-message", "x-request-id", "ratelimit", "ratelimit-policy"} <= exposed


def test_grpc_web_health_check(stack: Stack) -> None:
    """A gRPC-web call (HTTP/1.1, framed body) is bridged to gRPC: message frame + trailer frame."""
    response = stack.request(
        "POST",
        "/grpc.health.v1.Health/Check",
        body=b"\x00\x00\x00\x00\x00",  # uncompressed frame, empty HealthCheckRequest
        headers={"content-type": "application/grpc-web+proto", "x-grpc-web": "1"},
    )
    assert response.status == 200
    assert response.content_type == "application/grpc-web+proto"
    flag, length = struct.unpack(">BI", response.body[:5])
    assert (flag, response.body[5 : 5 + length]) == (0, b"\x08\x01")  # status: SERVING
    trailer = response.body[5 + length :]
    assert trailer[0] == 0x80
    assert b"grpc-status:0" in trailer


# --- Envoy's view of the upstream ---------------------------------------------------------------


def test_envoy_health_check_sees_nexus_healthy(stack: Stack) -> None:
    """grpc_health_check with a 1 s no-traffic interval turns the host healthy quickly."""
    flag = f"nexus::127.0.0.1:{stack.grpc_port}::health_flags::healthy"
    deadline = time.monotonic() + 15
    clusters = ""
    while time.monotonic() < deadline:
        clusters = http_get_text(stack.admin_port, "/clusters") or ""
        if flag in clusters:
            break
        time.sleep(0.2)
    assert flag in clusters, clusters
    stats = http_get_text(stack.admin_port, "/stats?filter=cluster.nexus.health_check") or ""
    assert re.search(r"cluster\.nexus\.health_check\.success: [1-9]", stats), stats
