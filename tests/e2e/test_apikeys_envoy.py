"""The API-key lifecycle as a web client drives it, through Envoy's JSON transcoding: an owner
creates a key, lists and reads it (never its secret), verifies it, rotates and revokes it; and
the key's rate-limit fields arrive as HTTP headers."""

from __future__ import annotations

import uuid

import pytest

from .conftest import Stack

pytestmark = pytest.mark.e2e
PASSWORD = "Correct-Horse-9-Battery"


def _owner_and_tenant(stack: Stack) -> tuple[str, str]:
    email = f"keys-{uuid.uuid4().hex[:12]}@example.com"
    response, user = stack.json("POST", "/v1/auth/register", {"email": email, "password": PASSWORD})
    assert response.status == 200, user
    token = user["access_token"]
    slug = f"keys-{uuid.uuid4().hex[:10]}"
    response, tenant = stack.json(
        "POST", "/v1/tenants", {"slug": slug, "display_name": "Keys Inc"}, token=token
    )
    assert response.status == 200, tenant
    return token, tenant["id"]


def test_key_lifecycle_through_envoy_json(stack: Stack) -> None:
    token, tenant = _owner_and_tenant(stack)
    # The route takes the resource itself as the body (`body: "api_key"`).
    body = {"name": "crm", "scopes": ["apikeys:read", "auth:introspect"], "environment": "ENVIRONMENT_TEST"}
    response, created = stack.json("POST", "/v1/api-keys", body, token=token, tenant=tenant)
    assert response.status == 200, created
    key_id, full_key = created["api_key"]["id"], created["key"]
    assert full_key.startswith(key_id + ".")

    response, listed = stack.json("GET", "/v1/api-keys", token=token, tenant=tenant)
    assert response.status == 200, listed
    assert [k["id"] for k in listed["api_keys"]] == [key_id]
    secret = full_key.split(".", 1)[1]
    assert secret not in response.text, "a listed key must never carry its secret"

    # The key authenticates by itself, and its rate-limit fields arrive as HTTP headers
    # (Envoy drops custom unary trailers, so Nexus sends them as headers for JSON calls).
    response, verified = stack.json("POST", "/v1/api-keys:verify", {"key": full_key}, token=full_key)
    assert response.status == 200, verified
    assert verified["valid"] is True and verified["key_id"] == key_id
    assert '"apikey"' in response.headers.get("ratelimit-policy", ""), response.headers
    assert response.headers.get("ratelimit", "").startswith('"apikey";r=')

    response, rotated = stack.json("POST", f"/v1/api-keys/{key_id}:rotate", {}, token=token, tenant=tenant)
    assert response.status == 200, rotated
    new_key = rotated["key"]
    assert rotated["api_key"]["id"] == key_id and new_key != full_key
    response, _ = stack.json("GET", f"/v1/api-keys/{key_id}", token=full_key)
    assert response.status == 401, "the old secret stops working at once without a grace period"
    response, got = stack.json("GET", f"/v1/api-keys/{key_id}", token=new_key)
    assert response.status == 200 and got["id"] == key_id

    response, revoked = stack.json("POST", f"/v1/api-keys/{key_id}:revoke", {}, token=token, tenant=tenant)
    assert response.status == 200 and revoked["state"] == "STATE_REVOKED", revoked
    response, refused = stack.json("GET", f"/v1/api-keys/{key_id}", token=new_key)
    assert response.status == 401
    assert refused["details"][0]["reason"] == "CREDENTIALS_INVALID"


def test_a_member_without_admin_cannot_create_keys_over_json(stack: Stack) -> None:
    _, tenant = _owner_and_tenant(stack)
    email = f"outsider-{uuid.uuid4().hex[:12]}@example.com"
    _, outsider = stack.json("POST", "/v1/auth/register", {"email": email, "password": PASSWORD})
    body = {"name": "x", "scopes": ["*"], "environment": "ENVIRONMENT_LIVE"}
    response, refused = stack.json(
        "POST", "/v1/api-keys", body, token=outsider["access_token"], tenant=tenant
    )
    assert response.status == 403, refused
    assert refused["details"][0]["reason"] == "TENANT_ACCESS_DENIED"
