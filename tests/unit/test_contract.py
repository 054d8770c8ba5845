"""The contract itself: every service and RPC of API.md, with routes, callers and comments."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

from nexus.common.v1 import access_pb2
from nexus_server.common.descriptors import DESCRIPTOR_SET, elements, load_descriptor_set, nexus_files

API_MD = Path(__file__).resolve().parents[3] / "shared" / "API.md"


@pytest.fixture(scope="module")
def fds() -> descriptor_pb2.FileDescriptorSet:
    return load_descriptor_set(DESCRIPTOR_SET)


def _methods(fds: descriptor_pb2.FileDescriptorSet) -> dict[str, descriptor_pb2.MethodDescriptorProto]:
    return {
        f"{f.package}.{s.name}.{m.name}": m for f in nexus_files(fds) for s in f.service for m in s.method
    }


def _api_md_rpcs() -> dict[str, set[str]]:
    """Service name → RPC names listed in API.md's tables (`A / B` cells name several)."""
    if not API_MD.exists():
        pytest.skip("../shared/API.md is not beside the repository")
    rpcs: dict[str, set[str]] = {}
    service = ""
    for line in API_MD.read_text(encoding="utf-8").splitlines():
        heading = re.match(r"## (\w+Service)", line)
        if heading:
            service = heading.group(1)
            rpcs[service] = set()
        elif (
            service and line.startswith("| ") and not line.startswith("| RPC") and not line.startswith("|---")
        ):
            cell = line.split("|")[1]
            rpcs[service].update(
                n.strip() for n in re.split(r"[/,]", cell) if re.fullmatch(r"\s*[A-Z]\w+\s*", n)
            )
    return rpcs


def test_every_api_md_service_and_rpc_exists(fds: descriptor_pb2.FileDescriptorSet) -> None:
    methods = _methods(fds)
    listed = _api_md_rpcs()
    assert set(listed) == {
        "IdentityService",
        "ApiKeyService",
        "TenantService",
        "BillingService",
        "UsageService",
        "EventsService",
    }
    missing = []
    for service, names in listed.items():
        for name in names:
            if not any(full.endswith(f".{service}.{name}") for full in methods):
                missing.append(f"{service}.{name}")
    assert not missing, f"RPCs named in API.md but absent from proto/: {missing}"


def test_every_rpc_has_an_http_rule(fds: descriptor_pb2.FileDescriptorSet) -> None:
    without = [
        name
        for name, m in _methods(fds).items()
        if m.options.Extensions[annotations_pb2.http].WhichOneof("pattern") is None
    ]
    assert not without, f"RPCs without google.api.http: {without}"


def test_every_rpc_declares_who_may_call_it(fds: descriptor_pb2.FileDescriptorSet) -> None:
    undeclared = []
    for name, m in _methods(fds).items():
        options = descriptor_pb2.MethodOptions.FromString(m.options.SerializeToString())
        rule = options.Extensions[access_pb2.access]
        if rule.caller == access_pb2.CALLER_UNSPECIFIED and not rule.key_scope:
            undeclared.append(name)
    assert not undeclared, f"RPCs that no caller may call (missing nexus.common.v1.access): {undeclared}"


def test_every_element_has_a_comment(fds: descriptor_pb2.FileDescriptorSet) -> None:
    bare = [f"{e.kind} {e.name}" for f in nexus_files(fds) for e in elements(f) if not e.comment]
    assert not bare, f"elements without a comment: {bare}"


def test_descriptor_set_carries_error_details_for_envoy(fds: descriptor_pb2.FileDescriptorSet) -> None:
    # Without google/rpc/error_details.proto Envoy's transcoder drops Status details silently.
    assert "google/rpc/error_details.proto" in {f.name for f in fds.file}


def test_each_service_has_an_error_reason_enum(fds: descriptor_pb2.FileDescriptorSet) -> None:
    packages_with_service = {f.package for f in nexus_files(fds) if f.service}
    packages_with_reasons = {
        f.package for f in nexus_files(fds) for e in f.enum_type if e.name == "ErrorReason"
    }
    assert packages_with_service <= packages_with_reasons
