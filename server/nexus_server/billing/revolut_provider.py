"""Credit purchases through Revolut Merchant: the `CreditsCheckout` port of provider.py.

Revolut publishes no Python client, so this speaks its Merchant API directly with one
`httpx.AsyncClient` (connections pooled; `aclose()` releases them). Two calls are all credits
need:

- `POST /api/orders` creates an order for the purchase's amount and answers with its hosted
  `checkout_url`, where the payer goes, as with a Stripe Checkout Session. Nexus's purchase id
  goes out as `merchant_order_data.reference` (and in `metadata`, like Stripe's), and comes back
  in the webhook as `merchant_order_ext_ref`.
- `GET /api/orders/{id}` re-reads the order: the webhook (revolut_webhook.py) only says that
  something happened, and crediting follows the order's state as it stands now.

Shapes. `API_VERSION` is pinned in the `Revolut-Api-Version` header because Revolut versions its
request and answer shapes by it: on this version amounts are integers in minor units, states are
lower case (`pending`, `processing`, `authorised`, `completed`, `cancelled`, `failed`) and the
reference sits under `merchant_order_data`. Moving the pin means re-reading those shapes.

Mapping to `ProviderCheckout`: `completed` is `complete`/`paid`; `cancelled` and `failed` are
`expired` (the order can no longer be paid); every other state is `open`/`unpaid`, including
`authorised` (the capture has not happened, so nothing has been paid yet).

Idempotency. A create carries the caller's key as `Idempotency-Key`, so a retry after a lost
answer is the same order, not a second one.

Errors. No httpx exception leaves this module: transport errors, timeouts, 429 and 5xx are
`ProviderUnavailable` (retry with the same key); other 4xx are `ProviderRejected` with Revolut's
error `code` when the body has one. Messages never hold the API key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx

from nexus_server.billing.provider import (
    CheckoutSession,
    PaymentCheckoutRequest,
    ProviderCheckout,
    ProviderError,
    ProviderRejected,
    ProviderUnavailable,
)

API_VERSION = "2024-09-01"
DEFAULT_API_BASE = "https://merchant.revolut.com"
# How long a pending order is offered when the answer names no `expire_pending_after`; the
# checkout page's link is what Nexus shows, so this is only the purchase's advertised deadline.
DEFAULT_ORDER_TTL = timedelta(hours=24)
_ENDED = frozenset({"cancelled", "failed"})  # states an order never leaves unpaid
_MESSAGE_LIMIT = 200  # of Revolut's own error message in ours
_DURATION = re.compile(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?")

Json = dict[str, Any]


class RevolutProvider:
    name = "revolut"

    def __init__(self, api_key: str, *, api_base: str = DEFAULT_API_BASE, timeout: float = 10.0):
        self._api_key = api_key  # kept only to be scrubbed from any message that might echo it
        self._client = httpx.AsyncClient(
            base_url=api_base.rstrip("/"),
            timeout=timeout,
            headers={
                "Authorization": f"Bearer {api_key}",
                "Revolut-Api-Version": API_VERSION,
                "Accept": "application/json",
            },
            follow_redirects=False,  # an API answer, never a page: a redirect is an error
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def create_payment_checkout(self, request: PaymentCheckoutRequest) -> CheckoutSession:
        metadata = {str(key): str(value) for key, value in request.metadata.items()}
        metadata["reference"] = request.reference  # as on Stripe; the purchase id wins
        order = await self._request(
            "POST",
            "/api/orders",
            json={
                "amount": request.amount_minor,
                "currency": request.currency.upper(),
                "description": request.description,
                "merchant_order_data": {"reference": request.reference},
                "metadata": metadata,
                "redirect_url": request.success_url,
            },
            headers={"Idempotency-Key": request.idempotency_key},
        )
        order_id = _text(order.get("id"))
        url = _text(order.get("checkout_url"))
        if not order_id or not url:
            raise ProviderUnavailable("Revolut: the created order came back without an id or checkout_url")
        return CheckoutSession(id=order_id, url=url, expire_time=_expire_time(order))

    async def get_checkout(self, session_id: str) -> ProviderCheckout:
        # Quoted: the id may come from a webhook body, and must not reach another path (a bare
        # `..` survives quoting, and URL normalisation would climb with it).
        quoted = quote(session_id, safe="")
        if quoted in ("", ".", ".."):
            raise ProviderRejected("Revolut: that is not an order id", "invalid_order_id")
        order = await self._request("GET", f"/api/orders/{quoted}")
        state = _text(order.get("state")).lower()
        merchant = order.get("merchant_order_data")
        reference = _text(merchant.get("reference")) if isinstance(merchant, Mapping) else ""
        amount = order.get("amount")
        return ProviderCheckout(
            id=_text(order.get("id")) or session_id,
            mode="payment",
            status="complete" if state == "completed" else "expired" if state in _ENDED else "open",
            payment_status="paid" if state == "completed" else "unpaid",
            customer_id="",
            subscription_id="",
            metadata=_metadata(order.get("metadata")),
            amount_total_minor=amount if isinstance(amount, int) and not isinstance(amount, bool) else 0,
            reference=reference,
            currency=_text(order.get("currency")).upper(),
        )

    # -- calls ---------------------------------------------------------------------------------

    async def _request(
        self, method: str, path: str, *, json: Json | None = None, headers: Mapping[str, str] | None = None
    ) -> Json:
        try:
            response = await self._client.request(method, path, json=json, headers=headers)
        except httpx.TimeoutException:
            raise ProviderUnavailable(f"Revolut: {method} {_route(path)} timed out") from None
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as error:
            # The type names the failure; its text (the URL, the socket error) adds nothing safe.
            raise ProviderUnavailable(
                f"Revolut: {method} {_route(path)} failed ({type(error).__name__})"
            ) from None
        status = response.status_code
        body = _json(response)
        if status == 429 or status >= 500:
            raise ProviderUnavailable(f"Revolut: {method} {_route(path)} answered HTTP {status}")
        if status >= 300:
            raise self._rejected(method, path, status, body)
        if body is None:
            raise ProviderUnavailable(f"Revolut: {method} {_route(path)} answered without a JSON object")
        return body

    def _rejected(self, method: str, path: str, status: int, body: Json | None) -> ProviderError:
        code = _text(body.get("code")) if body else ""
        said = _text(body.get("message")) if body else ""
        said = said.replace(self._api_key, "[redacted]")[:_MESSAGE_LIMIT] if self._api_key else said
        message = f"Revolut: {method} {_route(path)} refused with HTTP {status}"
        if said:
            message += f": {said}"
        return ProviderRejected(message, code)


def _json(response: httpx.Response) -> Json | None:
    try:
        body = response.json()
    except ValueError:  # not JSON, or not UTF-8
        return None
    return body if isinstance(body, dict) else None


def _route(path: str) -> str:
    """The endpoint without the order id: messages name the call, ids go in the caller's log."""
    return "/api/orders/{id}" if path.startswith("/api/orders/") else path


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _metadata(metadata: Any) -> dict[str, str]:
    if not isinstance(metadata, Mapping):
        return {}
    return {str(key): _text(value) for key, value in metadata.items()}


def _expire_time(order: Json) -> datetime:
    """When the order stops taking payment: its `expire_pending_after` (an ISO 8601 duration)
    after its creation when the answer names one, else a day from now."""
    created = _instant(order.get("created_at")) or datetime.now(UTC)
    after = _duration(order.get("expire_pending_after"))
    return created + after if after is not None else datetime.now(UTC) + DEFAULT_ORDER_TTL


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _duration(value: Any) -> timedelta | None:
    match = _DURATION.fullmatch(value) if isinstance(value, str) and value not in ("P", "PT") else None
    if match is None:
        return None
    days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
