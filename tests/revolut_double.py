"""A small stateful double of Revolut's Merchant API, on loopback, for `RevolutProvider`.

Only what credit purchases use exists: `POST /api/orders` and `GET /api/orders/{id}`, answering
in the shapes of `API_VERSION` (2024-09-01): amounts as integers in minor units, lower-case
states, the merchant's reference under `merchant_order_data`, a hosted `checkout_url`. Errors are
`{"code", "message", "timestamp"}` with Revolut's status codes (400 invalid request, 401 bad key,
404 no such order). Requests must carry `Authorization: Bearer sk_...` and the pinned
`Revolut-Api-Version`; a POST's `Idempotency-Key` replays the first answer without creating a
second order (the same key with another body is refused, 422). `outage` makes every request
answer 503, as Revolut does when it is down for maintenance.

Tests play the payer and Revolut: `complete_order` and `fail_order` change an order's state and
return the webhook body Revolut would then send; `sign` signs a body as Revolut signs webhooks
(`Revolut-Signature: v1=<HMAC-SHA256 of "v1.<ms>.<body>">`, one v1 per active secret) and
`event_payload` serialises a body as Revolut sends it (compact JSON). `calls` counts requests by
route and `received` keeps each POST's JSON body.

The server is HTTP/1.0 (one request a connection), so `stop()` leaves no socket open.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import itertools
import json
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

API_VERSION = "2024-09-01"

Json = dict[str, Any]


class _Refusal(Exception):
    """An answer in Revolut's error shape."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.body: Json = {"code": code, "message": message, "timestamp": int(time.time() * 1000)}


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, double: RevolutDouble):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.double = double


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self._answer("GET")

    def do_POST(self) -> None:
        self._answer("POST")

    def _answer(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        status, payload = self.server.double.handle(
            method,
            self.path,
            body,
            authorization=self.headers.get("Authorization", ""),
            api_version=self.headers.get("Revolut-Api-Version", ""),
            idempotency_key=self.headers.get("Idempotency-Key", ""),
        )
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # tests read `calls`, not a log
        pass


class RevolutDouble:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._tokens = itertools.count(1)
        self._calls: Counter[str] = Counter()
        self._orders: dict[str, Json] = {}
        self._replies: dict[str, tuple[bytes, int, bytes]] = {}  # idempotency key -> body, answer
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.received: list[Json] = []  # each POST's JSON body, replays included
        self.outage = False  # every request answers 503

    # -- life ----------------------------------------------------------------------------------

    @classmethod
    def start(cls) -> RevolutDouble:
        double = cls()
        double._server = _Server(double)
        double._thread = threading.Thread(
            target=double._server.serve_forever, args=(0.05,), name="revolut-double", daemon=True
        )
        double._thread.start()
        return double

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = self._thread = None

    def __enter__(self) -> RevolutDouble:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def api_base(self) -> str:
        assert self._server is not None, "the double is not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def calls(self, route: str) -> int:
        """Requests received for `POST /api/orders` or `GET /api/orders/{id}`, replays included."""
        return self._calls[route]

    def order(self, order_id: str) -> Json:
        with self._lock:
            return copy.deepcopy(self._orders[order_id])

    # -- what a payer and Revolut do -----------------------------------------------------------

    def complete_order(self, order_id: str) -> Json:
        """The payer pays and Revolut captures: the order is `completed`; the webhook body."""
        return self._finish(order_id, "completed", "ORDER_COMPLETED")

    def fail_order(self, order_id: str) -> Json:
        """The payment fails for good: the order is `failed`; the webhook body."""
        return self._finish(order_id, "failed", "ORDER_PAYMENT_FAILED")

    @staticmethod
    def sign(
        payload: bytes, secret: str, *, timestamp_ms: int | None = None, secrets: Sequence[str] = ()
    ) -> tuple[str, str]:
        """(`Revolut-Signature`, `Revolut-Request-Timestamp`) for `payload`: one `v1=` value for
        `secret` and each of `secrets` (Revolut signs with every active secret during a rotation)."""
        signed_at = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        message = f"v1.{signed_at}.".encode() + payload
        signatures = [
            hmac.new(key.encode(), message, hashlib.sha256).hexdigest() for key in (secret, *secrets)
        ]
        return ",".join(f"v1={signature}" for signature in signatures), str(signed_at)

    @staticmethod
    def event_payload(event: Json) -> bytes:
        return json.dumps(event, separators=(",", ":")).encode()

    # -- HTTP ----------------------------------------------------------------------------------

    def handle(
        self,
        method: str,
        target: str,
        body: bytes,
        *,
        authorization: str,
        api_version: str,
        idempotency_key: str,
    ) -> tuple[int, bytes]:
        path = urlsplit(target).path
        with self._lock:
            if method == "POST" and path == "/api/orders":
                route = "POST /api/orders"
            elif method == "GET" and re.fullmatch(r"/api/orders/[^/]+", path):
                route = "GET /api/orders/{id}"
            else:
                return 404, self._dump(_Refusal(404, "not_found", f"No route for {method} {path}").body)
            self._calls[route] += 1
            if self.outage:
                return 503, self._dump(_Refusal(503, "service_unavailable", "Down for maintenance").body)
            try:
                if not re.fullmatch(r"Bearer sk_[\w-]+", authorization):
                    raise _Refusal(401, "unauthenticated", "Authentication failed")
                if api_version != API_VERSION:
                    raise _Refusal(
                        400, "bad_request", f"This double speaks only Revolut-Api-Version {API_VERSION}"
                    )
                if route == "GET /api/orders/{id}":
                    return 200, self._dump(self._get(unquote(path.rsplit("/", 1)[1])))
                if idempotency_key in self._replies:
                    first, status, payload = self._replies[idempotency_key]
                    if first != body:
                        raise _Refusal(422, "idempotency_key_reused", "The key was used with another request")
                    self.received.append(json.loads(body))
                    return status, payload
                answer = self._create(body)
            except _Refusal as refusal:
                return refusal.status, self._dump(refusal.body)
            payload = self._dump(answer)
            if idempotency_key:
                self._replies[idempotency_key] = (body, 200, payload)
            return 200, payload

    # -- orders --------------------------------------------------------------------------------

    def _create(self, body: bytes) -> Json:
        try:
            request = json.loads(body)
        except ValueError:
            raise _Refusal(400, "bad_request", "The body is not JSON") from None
        if not isinstance(request, dict):
            raise _Refusal(400, "bad_request", "The body is not a JSON object")
        self.received.append(request)
        amount, currency = request.get("amount"), request.get("currency")
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            raise _Refusal(400, "bad_request", "amount must be a positive integer in minor units")
        if not isinstance(currency, str) or not re.fullmatch(r"[A-Za-z]{3}", currency):
            raise _Refusal(400, "bad_request", "currency must be an ISO 4217 code")
        metadata = request.get("metadata") or {}
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise _Refusal(400, "bad_request", "metadata values must be strings")
        merchant = request.get("merchant_order_data") or {}
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        order_id, token = str(uuid.uuid4()), f"tok_dbl{next(self._tokens):08d}"
        order: Json = {
            "id": order_id,
            "token": token,
            "type": "payment",
            "state": "pending",
            "created_at": now,
            "updated_at": now,
            "amount": amount,
            "currency": currency.upper(),
            "outstanding_amount": amount,
            "capture_mode": "automatic",
            "checkout_url": f"https://checkout.revolut.com/payment-link/{token}",
            "description": request.get("description"),
            "enforce_challenge": "automatic",
            "merchant_order_data": {"reference": merchant.get("reference")} if merchant else None,
            "metadata": dict(metadata),
            "redirect_url": request.get("redirect_url"),
        }
        self._orders[order_id] = order
        return order

    def _get(self, order_id: str) -> Json:
        if order_id not in self._orders:
            raise _Refusal(404, "not_found", "Order not found")
        return self._orders[order_id]

    def _finish(self, order_id: str, state: str, event: str) -> Json:
        with self._lock:
            order = self._orders[order_id]
            if order["state"] != "pending":
                raise ValueError(f"order {order_id} is {order['state']}")
            order["state"] = state
            order["updated_at"] = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            if state == "completed":
                order["outstanding_amount"] = 0
            reference = (order["merchant_order_data"] or {}).get("reference")
            return {"event": event, "order_id": order_id, "merchant_order_ext_ref": reference}

    @staticmethod
    def _dump(answer: Json) -> bytes:
        return json.dumps(answer).encode()
