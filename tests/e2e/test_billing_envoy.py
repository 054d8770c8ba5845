"""Billing through real processes: `nexus serve` configured for Stripe and, for credits,
Revolut Merchant (their doubles in this test process, on loopback), Envoy in front, and the
`nexus billing` commands. A web client buys a plan and credits with JSON; the providers'
signed webhooks reach Nexus through Envoy's raw-body routes with their signature headers;
`nexus billing sync` is idempotent."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from nexus_server.config import ROOT
from tests.e2e.conftest import NEXUS, Stack, running_stack
from tests.revolut_double import RevolutDouble
from tests.stripe_double import StripeDouble

SECRET = "whsec_e2e_signing_secret"
REVOLUT_SECRET = "revolut_e2e_signing_secret"
PASSWORD = "Correct-horse-9-battery"
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def double() -> Iterator[StripeDouble]:
    with StripeDouble.start() as running:
        yield running


@pytest.fixture(scope="module")
def revolut_double() -> Iterator[RevolutDouble]:
    with RevolutDouble.start() as running:
        yield running


@pytest.fixture(scope="module")
def stripe_stack(
    tmp_path_factory: pytest.TempPathFactory, double: StripeDouble, revolut_double: RevolutDouble
) -> Iterator[Stack]:
    """Plans sold through Stripe, credits through Revolut Merchant (as the AI-chat seed does)."""
    with running_stack(
        tmp_path_factory.mktemp("billing"),
        NEXUS_STRIPE_API_KEY="sk_test_e2e",
        NEXUS_STRIPE_API_BASE=double.api_base,
        NEXUS_STRIPE_WEBHOOK_SECRET=SECRET,
        NEXUS_CREDITS_PROVIDER="revolut",
        NEXUS_REVOLUT_API_KEY="sk_revolut_e2e",
        NEXUS_REVOLUT_API_BASE=revolut_double.api_base,
        NEXUS_REVOLUT_WEBHOOK_SECRET=REVOLUT_SECRET,
    ) as stack:
        yield stack


def _nexus(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [NEXUS, *args], env=stack.env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )


def _owner_of_a_tenant(stack: Stack) -> tuple[str, str]:
    email = f"billing-{uuid.uuid4().hex[:10]}@example.com"
    response, _ = stack.json("POST", "/v1/auth/register", {"email": email, "password": PASSWORD})
    assert response.status == 200, response.text
    _, login = stack.json("POST", "/v1/auth/login", {"email": email, "password": PASSWORD})
    token = login["access_token"]
    response, tenant = stack.json(
        "POST", "/v1/tenants", {"slug": f"b-{uuid.uuid4().hex[:8]}", "display_name": "Buyer"}, token=token
    )
    assert response.status == 200, response.text
    return token, tenant["id"]


def _webhook(stack: Stack, event: dict[str, Any], secret: str = SECRET) -> tuple[int, dict[str, Any]]:
    payload = StripeDouble.event_payload(event)
    response = stack.request(
        "POST",
        "/v1/billing/stripe/webhook",
        body=payload,
        headers={"content-type": "application/json", "stripe-signature": StripeDouble.sign(payload, secret)},
    )
    return response.status, json.loads(response.text or "{}")


def test_billing_sync_creates_the_catalogs_prices_once(stripe_stack: Stack, double: StripeDouble) -> None:
    first = _nexus(stripe_stack, "billing", "sync")
    assert first.returncode == 0, first.stderr
    assert "nexus_plan_pro" in first.stdout
    again = _nexus(stripe_stack, "billing", "sync")
    assert again.returncode == 0, again.stderr
    assert again.stdout.split() and all(line.startswith("unchanged") for line in again.stdout.splitlines()), (
        again.stdout
    )


def test_a_web_client_buys_a_plan_and_stripes_webhooks_through_envoy_apply_it(
    stripe_stack: Stack, double: StripeDouble
) -> None:
    assert _nexus(stripe_stack, "billing", "sync").returncode == 0
    token, tenant_id = _owner_of_a_tenant(stripe_stack)
    response, session = stripe_stack.json(
        "POST",
        f"/v1/tenants/{tenant_id}/subscription:checkout",
        {"plan_id": "pro"},
        token=token,
        tenant=tenant_id,
    )
    assert response.status == 200, response.text
    events = double.complete_checkout(session["checkout_session_id"])

    status, refused = _webhook(stripe_stack, events[0], secret="whsec_not_ours")
    assert status == 401 and refused["details"][0]["reason"] == "STRIPE_SIGNATURE_INVALID"
    outcomes = []
    for event in events:
        status, reply = _webhook(stripe_stack, event)
        assert status == 200, reply
        outcomes.append(reply["outcome"])
    assert "STRIPE_EVENT_OUTCOME_APPLIED" in outcomes
    status, again = _webhook(stripe_stack, events[0])
    assert (status, again["outcome"]) == (200, "STRIPE_EVENT_OUTCOME_DUPLICATE")

    _, sub = stripe_stack.json("GET", f"/v1/tenants/{tenant_id}/subscription", token=token, tenant=tenant_id)
    assert (sub["plan_id"], sub["status"]) == ("pro", "SUBSCRIPTION_STATUS_TRIALING")
    _, plans = stripe_stack.json("GET", "/v1/plans")
    assert [p["id"] for p in plans["plans"]] == ["free", "pro", "business", "enterprise"]


def test_billing_run_cycle_dry_run_reports_what_it_examined(stripe_stack: Stack) -> None:
    token, tenant_id = _owner_of_a_tenant(stripe_stack)
    stripe_stack.json("GET", f"/v1/tenants/{tenant_id}/subscription", token=token, tenant=tenant_id)
    result = _nexus(stripe_stack, "billing", "run-cycle", "--dry-run", "--tenant", tenant_id)
    assert result.returncode == 0, result.stderr
    assert "1 subscriptions examined" in result.stdout
    bad = _nexus(stripe_stack, "billing", "run-cycle", "--tenant", "nope")
    assert bad.returncode == 1 and "not a tenant id" in bad.stderr


def test_credits_bought_through_revolut_land_once_via_its_webhook_through_envoy(
    stripe_stack: Stack, revolut_double: RevolutDouble
) -> None:
    token, tenant_id = _owner_of_a_tenant(stripe_stack)
    response, bought = stripe_stack.json(
        "POST",
        f"/v1/tenants/{tenant_id}/credits:purchase",
        {"credit_package_id": "starter"},
        token=token,
        tenant=tenant_id,
    )
    assert response.status == 200, response.text
    body = RevolutDouble.event_payload(revolut_double.complete_order(bought["checkout_session_id"]))
    for _ in range(2):
        signature, timestamp = RevolutDouble.sign(body, REVOLUT_SECRET)
        delivered = stripe_stack.request(
            "POST",
            "/v1/billing/revolut/webhook",
            body=body,
            headers={
                "content-type": "application/json",
                "revolut-signature": signature,
                "revolut-request-timestamp": timestamp,
            },
        )
        assert delivered.status == 200, delivered.text
    _, balance = stripe_stack.json("GET", f"/v1/tenants/{tenant_id}/credits", token=token, tenant=tenant_id)
    assert balance["balance"] == "10000"  # int64 is a JSON string
