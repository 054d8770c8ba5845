"""Per-method counts are exact at every scrape, though outcomes are counted in batches."""

from __future__ import annotations

import threading

import grpc
from prometheus_client import CollectorRegistry

from nexus_server.interceptors import metrics
from nexus_server.interceptors.call import Call, MethodInfo


class _Ctx:
    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"


def _call(code: grpc.StatusCode) -> Call:
    info = MethodInfo.parse("/nexus.tenant.v1.TenantService/GetTenant", streaming=False)
    call = Call(info, _Ctx(), {})
    call.code = code
    return call


def _sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(
        name, {"grpc_service": "nexus.tenant.v1.TenantService", "grpc_method": "GetTenant", **labels}
    )
    return value or 0.0


def test_every_outcome_is_counted_once_whether_folded_by_calls_or_by_a_scrape() -> None:
    registry = CollectorRegistry()
    layer = metrics.Metrics(registry)
    calls = 2 * metrics.FOLD_EVERY + 7  # two folds on the call path, the rest at the scrape
    scrapes = threading.Event()

    def scrape_meanwhile() -> None:
        while not scrapes.is_set():
            registry.collect()

    scraper = threading.Thread(target=scrape_meanwhile)
    scraper.start()
    try:
        for index in range(calls):
            call = _call(grpc.StatusCode.OK if index % 3 else grpc.StatusCode.NOT_FOUND)
            layer.before(call)
            layer.after(call)
    finally:
        scrapes.set()
        scraper.join()
    not_found = len(range(0, calls, 3))
    assert _sample(registry, "nexus_grpc_server_started_total") == calls
    assert _sample(registry, "nexus_grpc_server_handled_total", grpc_code="NOT_FOUND") == not_found
    assert _sample(registry, "nexus_grpc_server_handled_total", grpc_code="OK") == calls - not_found
    assert _sample(registry, "nexus_grpc_server_handling_seconds_count") == calls
