"""Stripe's webhook signature, checked by the `stripe` package's own code, never by hand.

`Stripe-Signature: t=<unix time>,v1=<hex HMAC-SHA256>[,v1=…]` signs `"{t}.{raw body}"`; the
package accepts the header when any `v1` matches and `t` is within the tolerance (300 s, as
Stripe's libraries default). Nexus may hold several signing secrets at once (comma-separated
`NEXUS_STRIPE_WEBHOOK_SECRET`, while an endpoint's secret is rolled): each is tried.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import stripe

TOLERANCE_SECONDS = 300


class SignatureInvalid(Exception):
    pass


class NotAnEvent(Exception):
    pass


def verified_event(payload: bytes, header: str, secrets: Sequence[str]) -> dict[str, Any]:
    """The event the body carries, once its signature checks out under one of `secrets`."""
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(payload, header, secret, tolerance=TOLERANCE_SECONDS)
        except stripe.SignatureVerificationError:
            continue
        break
    else:
        raise SignatureInvalid("the Stripe-Signature header is missing, wrong or stale")
    try:
        event = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NotAnEvent("the body is not JSON") from exc
    if not (
        isinstance(event, dict)
        and event.get("object") == "event"
        and isinstance(event.get("id"), str)
        and 0 < len(event["id"]) <= 255
        and isinstance(event.get("type"), str)
        and isinstance(event.get("data"), dict)
        and isinstance(event["data"].get("object"), dict)
    ):
        raise NotAnEvent("the body is not a Stripe event (object, id, type, data.object)")
    return event
