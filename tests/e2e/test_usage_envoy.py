"""Through Envoy, as a web client: RecordUsage, GetCurrentUsage, GetUsageHistory and
CheckQuota speak JSON (int64 as strings, per-record rejections as objects)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import Stack
from tests.support import usage_tenant

pytestmark = pytest.mark.e2e


async def test_usage_speaks_json_through_envoy(stack: Stack) -> None:
    url = f"sqlite+aiosqlite:///{Path(stack.env['NEXUS_VAR_DIR']) / 'nexus.db'}"
    tenant_id, key = await usage_tenant(url)
    records = [
        {
            "metric": "ai_tokens",
            "quantity": "1520",
            "idempotencyKey": "chat:1",
            "properties": {"model": "gpt-4o"},
        },
        {"metric": "ai_tokens", "quantity": 80, "idempotencyKey": "chat:2"},
        {"metric": "api_calls", "quantity": 1, "idempotencyKey": "chat:3"},
    ]
    response, body = stack.json("POST", "/v1/usage:record", {"records": records}, token=key)
    assert response.status == 200, response.text
    assert (body["accepted"], body.get("duplicates", 0), body["rejected"]) == (2, 0, 1)
    assert body["rejections"][0]["reason"] == "METRIC_RESERVED"
    assert body["rejections"][0]["index"] == "2"

    response, body = stack.json("GET", f"/v1/tenants/{tenant_id}/usage/current?metrics=ai_tokens", token=key)
    assert response.status == 200, response.text
    (tokens,) = body["metrics"]
    assert (tokens["used"], tokens["included"], tokens["enforcement"]) == (
        "1600",
        "100000",
        "QUOTA_ENFORCEMENT_HARD_LIMIT",
    )

    response, body = stack.json("GET", f"/v1/tenants/{tenant_id}/usage/history?days=3", token=key)
    assert response.status == 200, response.text
    assert [p.get("quantity", "0") for p in body["series"][0]["points"]] == ["0", "0", "1600"]

    response, body = stack.json(
        "POST",
        f"/v1/tenants/{tenant_id}/usage:check",
        {"metric": "ai_tokens", "quantity": "99000"},
        token=key,
    )
    assert response.status == 200, response.text
    assert (body.get("allowed", False), body["remaining"], body["overage"]) == (False, "98400", "600")

    response, body = stack.json("POST", "/v1/usage:record", {"records": []}, token=key)
    assert response.status == 400, response.text
