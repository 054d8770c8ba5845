"""Identity through Envoy as a web client sees it: JSON register, login, refresh, logout, and
an access token verified by PyJWT from the JWKS fetched through Envoy."""

from __future__ import annotations

import json
import uuid
from typing import Any

import jwt
import pytest

from .conftest import Stack, http_request

pytestmark = pytest.mark.e2e
PASSWORD = "Correct-Horse-9-Battery"


def post(stack: Stack, path: str, body: dict[str, Any], token: str = "") -> tuple[int, dict[str, Any]]:
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    response = http_request(stack.http_port, "POST", path, headers=headers, body=json.dumps(body).encode())
    return response.status, json.loads(response.text or "{}")


def get(stack: Stack, path: str, token: str = "") -> tuple[int, dict[str, Any]]:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    response = http_request(stack.http_port, "GET", path, headers=headers)
    return response.status, json.loads(response.text or "{}")


def test_register_login_refresh_logout_over_json(stack: Stack) -> None:
    email = f"e2e-{uuid.uuid4().hex[:12]}@example.com"
    status, registered = post(stack, "/v1/auth/register", {"email": email, "password": PASSWORD})
    assert status == 200, registered
    status, login = post(stack, "/v1/auth/login", {"email": email, "password": PASSWORD})
    assert status == 200 and login["token_type"] == "Bearer", login
    status, me = get(stack, "/v1/users/me", login["access_token"])
    assert (status, me["email"]) == (200, email)
    status, refreshed = post(stack, "/v1/auth/refresh", {"refresh_token": login["refresh_token"]})
    assert status == 200 and refreshed["session_id"] == login["session_id"]
    status, out = post(stack, "/v1/auth/logout", {}, refreshed["access_token"])
    assert (status, out["revoked_session_count"]) == (200, 1)
    status, _ = get(stack, "/v1/users/me", refreshed["access_token"])
    assert status == 401


def test_a_token_verifies_with_pyjwt_and_the_jwks_fetched_through_envoy(stack: Stack) -> None:
    email = f"e2e-{uuid.uuid4().hex[:12]}@example.com"
    status, registered = post(stack, "/v1/auth/register", {"email": email, "password": PASSWORD})
    assert status == 200, registered
    status, key_set = get(stack, "/.well-known/jwks.json")
    assert status == 200 and set(key_set) == {"keys"}
    keys = {k.key_id: k for k in jwt.PyJWKSet.from_dict(key_set).keys}
    token = registered["access_token"]
    claims = jwt.decode(
        token,
        keys[jwt.get_unverified_header(token)["kid"]],
        algorithms=["EdDSA", "ES256"],
        audience=stack.settings.audience,
        issuer=stack.settings.issuer,
    )
    assert claims["sub"] == registered["user"]["id"]


def test_a_wrong_password_is_401_with_the_reason(stack: Stack) -> None:
    status, body = post(
        stack, "/v1/auth/login", {"email": "nobody@example.com", "password": "Wrong-pass-123!"}
    )
    assert status == 401
    assert any(d.get("reason") == "INVALID_CREDENTIALS" for d in body.get("details", []))
