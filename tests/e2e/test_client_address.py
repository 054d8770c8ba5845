"""The caller's address through Envoy is the address Envoy saw, whatever X-Forwarded-For says.

Clients are told apart by binding their end of the connection to different loopback
addresses (127.0.0.2, 127.0.0.3, …; Linux routes all of 127/8 to lo, and Envoy's 127.0.0.1
listener accepts any of them).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from .conftest import Stack, running_stack

pytestmark = pytest.mark.e2e
PASSWORD = "Correct-Horse-9-Battery"
FORGED = {"x-forwarded-for": "203.0.113.7, 198.51.100.23"}


def register(
    stack: Stack, *, source: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    email = f"addr-{uuid.uuid4().hex[:12]}@example.com"
    response, body = stack.json(
        "POST", "/v1/auth/register", {"email": email, "password": PASSWORD}, headers=headers, source=source
    )
    return response.status, body


def session_addresses(stack: Stack, token: str) -> list[str]:
    response, body = stack.json("GET", "/v1/users/me/sessions", token=token)
    assert response.status == 200, body
    return [session["ip_address"] for session in body["sessions"]]


def test_the_rendered_config_makes_envoy_set_the_address(stack: Stack) -> None:
    text = stack.config_path.read_text()
    assert "use_remote_address: true" in text
    assert "xff_num_trusted_hops: 0" in text


def test_a_session_records_the_address_envoy_saw(stack: Stack) -> None:
    status, body = register(stack, source="127.0.0.2")
    assert status == 200, body
    assert session_addresses(stack, body["access_token"]) == ["127.0.0.2"]


def test_a_forged_x_forwarded_for_does_not_change_the_recorded_address(stack: Stack) -> None:
    status, body = register(stack, source="127.0.0.4", headers=FORGED)
    assert status == 200, body
    assert session_addresses(stack, body["access_token"]) == ["127.0.0.4"]
    login, answer = stack.json(
        "POST",
        "/v1/auth/login",
        {"email": _email_of(stack, body["access_token"]), "password": PASSWORD},
        headers={"x-forwarded-for": "192.0.2.1"},
        source="127.0.0.5",
    )
    assert login.status == 200, answer
    assert sorted(session_addresses(stack, answer["access_token"])) == ["127.0.0.4", "127.0.0.5"]


def _email_of(stack: Stack, token: str) -> str:
    response, me = stack.json("GET", "/v1/users/me", token=token)
    assert response.status == 200, me
    return str(me["email"])


@pytest.fixture(scope="module")
def throttled_stack(tmp_path_factory: pytest.TempPathFactory) -> Any:
    var_dir: Path = tmp_path_factory.mktemp("throttled")
    with running_stack(var_dir, NEXUS_SIGNUPS_PER_ADDRESS=3) as stack:
        yield stack


def test_one_client_exhausting_sign_ups_does_not_throttle_another(throttled_stack: Stack) -> None:
    for _ in range(3):
        status, body = register(throttled_stack, source="127.0.0.2")
        assert status == 200, body
    status, body = register(throttled_stack, source="127.0.0.2")
    assert status == 429, body
    assert "SIGNUP_THROTTLED" in str(body), body
    status, body = register(throttled_stack, source="127.0.0.3")
    assert status == 200, body


def test_a_new_forged_address_per_request_does_not_escape_the_limit(throttled_stack: Stack) -> None:
    for attempt in range(3):
        status, body = register(
            throttled_stack, source="127.0.0.6", headers={"x-forwarded-for": f"10.9.0.{attempt}"}
        )
        assert status == 200, body
    status, body = register(throttled_stack, source="127.0.0.6", headers={"x-forwarded-for": "10.9.0.99"})
    assert status == 429, body
