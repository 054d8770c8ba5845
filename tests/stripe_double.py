"""A small stateful double of the Stripe API, on loopback, for the `stripe` package to talk to.

Why not `localstripe` (PyPI): it was evaluated and does not fit. It has no Checkout Sessions, no
Billing Portal and no price lookup keys, and its subscriptions predate the pinned API version
(periods on the subscription, not on its items). This double speaks only `API_VERSION`
(2026-10-28.endive) and answers with the shapes the `stripe` package parses for it:

- subscriptions: `items.data[]` carry `current_period_start/end` and the full price;
- invoices: the subscription under `parent.subscription_details`; each line's price under
  `pricing.price_details.price` (an id) and its proration flag under `parent.*_details.proration`;
  `status_transitions.paid_at`; the first ten lines inline, the rest through `/lines`;
- errors: `{"error": {"type", "code", "message", "param"}}` with Stripe's status codes
  (400 invalid request, 401 bad key, 402 card declined, 404 no such object).

Requests are form-encoded as Stripe's clients send them (`a[b][0][c]=v`, `expand[0]=`, `a[]=`),
`Authorization: Bearer sk_test_...` is required, and a POST's `Idempotency-Key` replays the first
answer without repeating its effect (the same key with other parameters is an idempotency_error).
Only the endpoints Nexus uses exist; see `_routes`.

Checkout Sessions come in both modes Nexus uses: `subscription` (catalog prices by id) and
`payment` (one-off amounts, each line an inline `price_data` with `product_data.name`; a payment
session creates no customer and no subscription, as with Stripe's default `customer_creation`).

Tests drive it the way a customer and Stripe would: `complete_checkout`, `succeed_async_payment`,
`fail_async_payment`, `fail_renewal`, `pay_invoice` and `renew` change state and return the events
Stripe would send, each holding a snapshot of its object at that moment; API calls that change a
subscription (update, cancel, proration invoices) record theirs too. All go to `events`; `sign`
makes a real `Stripe-Signature`. Time is `clock` (unix seconds, settable, real time by default);
`calls` counts requests by route.
"""

from __future__ import annotations

import calendar
import copy
import hashlib
import hmac
import itertools
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

API_VERSION = "2026-10-28.endive"
INLINE_LINES = 10  # an invoice carries this many lines; the rest are paged from /lines
RETRY_AFTER = 3 * 86400  # when a failed renewal is attempted again

Json = dict[str, Any]
Route = Callable[[str, Json], Json]


class _Refusal(Exception):
    """An answer in Stripe's error shape."""

    def __init__(self, status: int, kind: str, message: str, *, code: str = "", param: str = ""):
        super().__init__(message)
        self.status = status
        error: Json = {"type": kind, "message": message}
        if code:
            error["code"] = code
        if param:
            error["param"] = param
        self.body: Json = {"error": error}


def _no_such(kind: str, object_id: str) -> _Refusal:
    return _Refusal(404, "invalid_request_error", f"No such {kind}: '{object_id}'", code="resource_missing")


def _required(params: Json, name: str) -> Any:
    if params.get(name) in (None, ""):
        raise _Refusal(
            400,
            "invalid_request_error",
            f"Missing required param: {name}.",
            code="parameter_missing",
            param=name,
        )
    return params[name]


def parse_form(encoded: str) -> Json:
    """Stripe's form encoding to nested dicts and lists; values stay strings."""
    root: Json = {}
    for name, value in parse_qsl(encoded, keep_blank_values=True):
        head = name.split("[", 1)[0]
        parts = [head, *re.findall(r"\[([^\[\]]*)\]", name[len(head) :])]
        node = root
        for index, part in enumerate(parts):
            key = str(len(node)) if part == "" else part  # `a[]=` appends
            if index == len(parts) - 1:
                node[key] = value
            else:
                node = node.setdefault(key, {})
    listed: Json = _listify(root)
    return listed


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    values = {key: _listify(value) for key, value in node.items()}
    if values and all(key.isdigit() for key in values):
        return [values[key] for key in sorted(values, key=int)]
    return values


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        message = f"Invalid integer: {value}"
        raise _Refusal(400, "invalid_request_error", message, code="parameter_invalid_integer") from None


def _bool(value: Any) -> bool:
    return str(value).lower() == "true"


def _add_interval(anchor: int, interval: str, count: int) -> int:
    """`count` intervals after `anchor`, on the anchor's day of the month (or the month's last)."""
    start = datetime.fromtimestamp(anchor, UTC)
    if interval in ("day", "week"):
        return int((start + timedelta(days=count * (7 if interval == "week" else 1))).timestamp())
    months = start.month - 1 + count * (12 if interval == "year" else 1)
    year, month = start.year + months // 12, months % 12 + 1
    day = min(start.day, calendar.monthrange(year, month)[1])
    return int(start.replace(year=year, month=month, day=day).timestamp())


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, double: StripeDouble):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.double = double


class _Handler(BaseHTTPRequestHandler):
    server: _Server  # HTTP/1.0: one request a connection, so stop() leaves none open

    def do_GET(self) -> None:
        self._answer("GET")

    def do_POST(self) -> None:
        self._answer("POST")

    def do_DELETE(self) -> None:
        self._answer("DELETE")

    def _answer(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        status, payload, headers = self.server.double.handle(
            method,
            self.path,
            body,
            authorization=self.headers.get("Authorization", ""),
            idempotency_key=self.headers.get("Idempotency-Key", ""),
            stripe_version=self.headers.get("Stripe-Version", ""),
        )
        self.send_response(status)
        for name, value in {**headers, "Content-Type": "application/json"}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # tests read `calls`, not a log
        pass


class StripeDouble:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self._clock: int | None = None
        self._calls: Counter[str] = Counter()
        self._replies: dict[str, tuple[str, int, bytes]] = {}  # idempotency key -> request, answer
        self._products: dict[str, Json] = {}
        self._prices: dict[str, Json] = {}
        self._customers: dict[str, Json] = {}
        self._sessions: dict[str, Json] = {}
        self._session_orders: dict[str, Json] = {}  # line_items, subscription_data: not in the shape
        self._subscriptions: dict[str, Json] = {}
        self._cycles: dict[str, int] = {}  # subscription item -> periods since the billing anchor
        self._invoices: dict[str, Json] = {}
        self._lines: dict[str, list[Json]] = {}
        self._invoice_items: dict[str, Json] = {}
        self._numbers = itertools.count(1)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.events: list[Json] = []
        self.decline_next_payment = False  # the next charge fails (card_declined)
        self.outage = False  # every request answers 503 api_error, as Stripe does when down

    # -- life ----------------------------------------------------------------------------------

    @classmethod
    def start(cls) -> StripeDouble:
        double = cls()
        double._server = _Server(double)
        double._thread = threading.Thread(
            target=double._server.serve_forever, args=(0.05,), name="stripe-double", daemon=True
        )
        double._thread.start()
        return double

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = self._thread = None

    def __enter__(self) -> StripeDouble:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def api_base(self) -> str:
        assert self._server is not None, "the double is not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def clock(self) -> int:
        return self._clock if self._clock is not None else int(time.time())

    @clock.setter
    def clock(self, unix: int) -> None:
        self._clock = unix

    def calls(self, route: str) -> int:
        """Requests received for e.g. `POST /v1/subscriptions/{id}`, replays included."""
        return self._calls[route]

    # -- what a customer and Stripe do ---------------------------------------------------------

    def complete_checkout(self, session_id: str, *, pay: bool = True, delayed: bool = False) -> list[Json]:
        """The customer finishes the checkout page. A payment session: paid at once, or with
        `delayed` (a bank debit, say) complete but `unpaid` until `succeed_async_payment`; with
        `pay=False` the card is declined on the page, the session stays open and no event is sent."""
        with self._lock:
            session = self._get(self._sessions, "checkout.session", session_id)
            if session["status"] != "open":
                raise ValueError(f"checkout session {session_id} is {session['status']}")
            if session["mode"] == "payment":
                return self._complete_payment(session, pay=pay, delayed=delayed)
            if delayed:
                raise ValueError("`delayed` is for payment sessions; a subscription's invoice pays or fails")
            order = self._session_orders[session_id]
            now = self.clock
            customer = session["customer"] or self._new_customer(session["customer_email"], {})["id"]
            trial_days = _int(order["subscription_data"].get("trial_period_days", 0))
            trial_end = now + trial_days * 86400 if trial_days else None
            sub_id = self._id("sub")
            subscription: Json = {
                "id": sub_id,
                "object": "subscription",
                "billing_cycle_anchor": trial_end or now,
                "cancel_at": None,
                "cancel_at_period_end": False,
                "canceled_at": None,
                "cancellation_details": {"comment": None, "feedback": None, "reason": None},
                "collection_method": "charge_automatically",
                "created": now,
                "currency": session["currency"],
                "customer": customer,
                "days_until_due": None,
                "default_payment_method": None,
                "description": None,
                "discounts": [],
                "ended_at": None,
                "latest_invoice": None,
                "livemode": False,
                "metadata": dict(order["subscription_data"].get("metadata", {})),
                "pause_collection": None,
                "pending_update": None,
                "schedule": None,
                "start_date": now,
                "status": "trialing" if trial_end else "active" if pay else "incomplete",
                "test_clock": None,
                "trial_end": trial_end,
                "trial_start": now if trial_end else None,
                "items": {
                    "object": "list",
                    "data": [],
                    "has_more": False,
                    "total_count": 0,
                    "url": f"/v1/subscription_items?subscription={sub_id}",
                },
            }
            for line in order["line_items"]:
                price = self._prices[line["price"]]
                cycle = 0 if trial_end else 1
                end = _add_interval(trial_end or now, price["recurring"]["interval"], cycle)
                self._add_item(subscription, price, _int(line.get("quantity", 1)), now, end, cycle)
            self._subscriptions[sub_id] = subscription
            events = [self._event("customer.subscription.created", self._subscription_view(subscription))]
            invoice = self._new_invoice(subscription, "subscription_create", now, now, trial=bool(trial_end))
            events.append(self._event("invoice.finalized", self._invoice_view(invoice)))
            events.append(self._settle(invoice, paid=pay or bool(trial_end)))
            session.update(
                status="complete",
                customer=customer,
                subscription=sub_id,
                payment_status="no_payment_required" if trial_end else "paid" if pay else "unpaid",
            )
            events.append(self._event("checkout.session.completed", session))
            return events

    def succeed_async_payment(self, session_id: str) -> list[Json]:
        """A delayed payment of a completed payment session arrives."""
        return self._settle_async(session_id, "checkout.session.async_payment_succeeded", paid=True)

    def fail_async_payment(self, session_id: str) -> list[Json]:
        """A delayed payment of a completed payment session fails; the session stays `unpaid`."""
        return self._settle_async(session_id, "checkout.session.async_payment_failed", paid=False)

    def fail_renewal(self, subscription_id: str) -> list[Json]:
        return self._renewal(subscription_id, paid=False)

    def renew(self, subscription_id: str) -> list[Json]:
        return self._renewal(subscription_id, paid=True)

    def pay_invoice(self, invoice_id: str) -> list[Json]:
        with self._lock:
            invoice = self._get(self._invoices, "invoice", invoice_id)
            if invoice["status"] != "open":
                raise ValueError(f"invoice {invoice_id} is {invoice['status']}")
            events = [self._settle(invoice, paid=True)]
            subscription = self._subscriptions.get(invoice["parent"]["subscription_details"]["subscription"])
            if subscription and subscription["status"] in ("past_due", "unpaid", "incomplete"):
                before = self._subscription_view(subscription)
                subscription["status"] = "active"
                events.append(self._updated(subscription, before))
            return events

    @staticmethod
    def sign(
        payload: bytes, secret: str, *, timestamp: int | None = None, secrets: Sequence[str] = ()
    ) -> str:
        """A `Stripe-Signature` header: `t=<ts>,v1=<HMAC-SHA256 of "<ts>.<payload>">`, one v1 a secret
        (Stripe signs with both while an endpoint's secret is being rolled)."""
        signed_at = int(time.time()) if timestamp is None else timestamp
        message = f"{signed_at}.".encode() + payload
        signatures = [
            hmac.new(key.encode(), message, hashlib.sha256).hexdigest() for key in (secret, *secrets)
        ]
        return ",".join([f"t={signed_at}", *(f"v1={signature}" for signature in signatures)])

    @staticmethod
    def event_payload(event: Json) -> bytes:
        return json.dumps(event).encode()

    def _complete_payment(self, session: Json, *, pay: bool, delayed: bool) -> list[Json]:
        if not pay:
            return []
        session.update(
            status="complete",
            payment_status="unpaid" if delayed else "paid",
            payment_intent=self._id("pi"),
        )
        return [self._event("checkout.session.completed", session)]

    def _settle_async(self, session_id: str, kind: str, *, paid: bool) -> list[Json]:
        with self._lock:
            session = self._get(self._sessions, "checkout.session", session_id)
            if (session["mode"], session["status"], session["payment_status"]) != (
                "payment",
                "complete",
                "unpaid",
            ):
                raise ValueError(f"checkout session {session_id} awaits no delayed payment")
            if paid:
                session["payment_status"] = "paid"
            return [self._event(kind, session)]

    # -- HTTP ----------------------------------------------------------------------------------

    def handle(
        self,
        method: str,
        target: str,
        body: str,
        *,
        authorization: str,
        idempotency_key: str,
        stripe_version: str,
    ) -> tuple[int, bytes, dict[str, str]]:
        url = urlsplit(target)
        params = parse_form(url.query if method != "POST" else body)
        with self._lock:
            headers = {"Request-Id": self._id("req"), "Stripe-Version": API_VERSION}
            found = self._route(method, url.path)
            if found is None:
                message = f"Unrecognized request URL ({method}: {url.path})."
                return 404, json.dumps(_Refusal(404, "invalid_request_error", message).body).encode(), headers
            template, route, object_id = found
            self._calls[f"{method} {template}"] += 1
            if self.outage:
                refusal = _Refusal(503, "api_error", "Stripe is having trouble (the double's outage switch).")
                return 503, json.dumps(refusal.body).encode(), headers
            request = f"{method} {url.path} {body}"
            try:
                if not re.fullmatch(r"Bearer sk_test_\w+", authorization):
                    raise _Refusal(401, "invalid_request_error", "Invalid API Key provided.")
                if stripe_version and stripe_version != API_VERSION:
                    raise _Refusal(400, "invalid_request_error", f"This double speaks only {API_VERSION}.")
                if method == "POST" and idempotency_key in self._replies:
                    first, status, payload = self._replies[idempotency_key]
                    if first != request:
                        raise _Refusal(
                            400,
                            "idempotency_error",
                            "Keys for idempotent requests can only be used with the same parameters "
                            f"they were first used with. Try using a key other than '{idempotency_key}'.",
                        )
                    return status, payload, {**headers, "Idempotent-Replayed": "true"}
                status, answer = 200, self._expanded(route(object_id, params), params.get("expand", []))
            except _Refusal as refusal:
                status, answer = refusal.status, refusal.body
            payload = json.dumps(answer).encode()
            # As Stripe: results are kept once the work began (success or a decline), not refusals.
            if method == "POST" and idempotency_key and (status == 200 or status == 402):
                self._replies[idempotency_key] = (request, status, payload)
            return status, payload, headers

    def _routes(self) -> list[tuple[str, str, Route]]:
        return [
            ("POST", "/v1/products", self._create_product),
            (
                "GET",
                "/v1/products",
                lambda _, p: self._page(list(self._products.values()), p, "/v1/products"),
            ),
            ("GET", "/v1/products/{id}", lambda oid, _: self._get(self._products, "product", oid)),
            ("POST", "/v1/prices", self._create_price),
            ("GET", "/v1/prices", self._list_prices),
            ("GET", "/v1/prices/{id}", lambda oid, _: self._get(self._prices, "price", oid)),
            ("POST", "/v1/customers", lambda _, p: self._new_customer(p.get("email"), p.get("metadata", {}))),
            ("GET", "/v1/customers/{id}", lambda oid, _: self._get(self._customers, "customer", oid)),
            ("POST", "/v1/checkout/sessions", self._create_session),
            (
                "GET",
                "/v1/checkout/sessions/{id}",
                lambda oid, _: self._get(self._sessions, "checkout.session", oid),
            ),
            ("POST", "/v1/billing_portal/sessions", self._create_portal),
            (
                "GET",
                "/v1/subscriptions/{id}",
                lambda oid, _: self._subscription_view(self._subscription(oid)),
            ),
            ("POST", "/v1/subscriptions/{id}", self._update_subscription),
            ("DELETE", "/v1/subscriptions/{id}", self._cancel_subscription),
            ("POST", "/v1/invoiceitems", self._create_invoice_item),
            ("GET", "/v1/invoices", self._list_invoices),
            ("GET", "/v1/invoices/{id}", lambda oid, _: self._invoice_view(self._invoice(oid))),
            ("GET", "/v1/invoices/{id}/lines", self._list_lines),
        ]

    def _route(self, method: str, path: str) -> tuple[str, Route, str] | None:
        for verb, template, route in self._routes():
            match = re.fullmatch(template.replace("{id}", "([^/]+)"), path)
            if verb == method and match:
                return template, route, match.group(1) if match.groups() else ""
        return None

    def _page(self, objects: list[Json], params: Json, url: str) -> Json:
        """A list answer: `limit` (10, at most 100) after `starting_after`, in the given order."""
        limit = min(_int(params.get("limit", 10)), 100)
        after = params.get("starting_after")
        ids = [item["id"] for item in objects]
        start = ids.index(after) + 1 if after in ids else 0
        return {
            "object": "list",
            "data": objects[start : start + limit],
            "has_more": start + limit < len(objects),
            "url": url,  # the client pages on from here
        }

    def _expanded(self, answer: Json, paths: list[str]) -> Json:
        answer = copy.deepcopy(answer)
        for path in paths:
            answer = self._expand(answer, path.split("."))
        return answer

    def _expand(self, node: Any, path: list[str]) -> Any:
        if isinstance(node, list):
            return [self._expand(item, path) for item in node]
        if not path:
            return copy.deepcopy(self._by_id(node)) if isinstance(node, str) else node
        if isinstance(node, dict) and path[0] in node:
            node[path[0]] = self._expand(node[path[0]], path[1:])
        return node

    def _by_id(self, object_id: str) -> Json | str:
        """The object an id names, as its own endpoint shows it; the id if it names none."""
        for table in (self._products, self._prices, self._customers):
            if object_id in table:
                return table[object_id]
        if object_id in self._subscriptions:
            return self._subscription_view(self._subscriptions[object_id])
        if object_id in self._invoices:
            return self._invoice_view(self._invoices[object_id])
        return object_id

    # -- catalog and customers -----------------------------------------------------------------

    def _create_product(self, _: str, params: Json) -> Json:
        product: Json = {
            "id": self._id("prod"),
            "object": "product",
            "active": params.get("active", "true") == "true",
            "created": self.clock,
            "default_price": None,
            "description": params.get("description"),
            "images": [],
            "livemode": False,
            "marketing_features": [],
            "metadata": dict(params.get("metadata", {})),
            "name": _required(params, "name"),
            "tax_code": None,
            "type": "service",
            "updated": self.clock,
            "url": None,
        }
        self._products[product["id"]] = product
        return product

    def _create_price(self, _: str, params: Json) -> Json:
        product = self._get(self._products, "product", _required(params, "product"))
        key = params.get("lookup_key") or None
        holder = next((p for p in self._prices.values() if key and p["lookup_key"] == key), None)
        if holder and not _bool(params.get("transfer_lookup_key")):
            message = f"A price ({holder['id']}) already uses that lookup key."
            raise _Refusal(400, "invalid_request_error", message, param="lookup_key")
        recurring = params.get("recurring")
        unit_amount = _int(_required(params, "unit_amount"))
        price: Json = {
            "id": self._id("price"),
            "object": "price",
            "active": True,
            "billing_scheme": "per_unit",
            "created": self.clock,
            "currency": str(_required(params, "currency")).lower(),
            "livemode": False,
            "lookup_key": key,
            "metadata": dict(params.get("metadata", {})),
            "nickname": None,
            "product": product["id"],
            "recurring": {
                "interval": recurring["interval"],
                "interval_count": _int(recurring.get("interval_count", 1)),
                "meter": None,
                "usage_type": "licensed",
            }
            if recurring
            else None,
            "tax_behavior": "unspecified",
            "tiers_mode": None,
            "transform_quantity": None,
            "type": "recurring" if recurring else "one_time",
            "unit_amount": unit_amount,
            "unit_amount_decimal": str(unit_amount),
        }
        if holder:
            holder["lookup_key"] = None
        self._prices[price["id"]] = price
        return price

    def _list_prices(self, _: str, params: Json) -> Json:
        keys = params.get("lookup_keys")
        prices = [
            price
            for price in reversed(self._prices.values())  # newest first, as Stripe lists
            if (keys is None or price["lookup_key"] in keys)
            and ("active" not in params or price["active"] == _bool(params["active"]))
            and ("product" not in params or price["product"] == params["product"])
        ]
        return self._page(prices, params, "/v1/prices")

    def _new_customer(self, email: str | None, metadata: Json) -> Json:
        customer: Json = {
            "id": self._id("cus"),
            "object": "customer",
            "balance": 0,
            "created": self.clock,
            "currency": None,
            "delinquent": False,
            "description": None,
            "email": email,
            "invoice_prefix": "DBL",
            "livemode": False,
            "metadata": dict(metadata),
            "name": None,
            "phone": None,
            "preferred_locales": [],
            "tax_exempt": "none",
        }
        self._customers[customer["id"]] = customer
        return customer

    def _create_session(self, _: str, params: Json) -> Json:
        mode = _required(params, "mode")
        if params.get("customer") and params.get("customer_email"):
            message = "You may only specify one of these parameters: customer, customer_email."
            raise _Refusal(400, "invalid_request_error", message)
        customer = params.get("customer")
        if customer:
            self._get(self._customers, "customer", customer)
        lines = _required(params, "line_items")
        prices = [self._line_price(line) for line in lines]
        if mode != "payment" and not all(line.get("price") for line in lines):  # Nexus sends none
            message = "This double takes price_data in payment mode only."
            raise _Refusal(400, "invalid_request_error", message, param="line_items")
        if mode == "payment" and any(price["recurring"] for price in prices):
            message = "You specified `payment` mode but passed a recurring price."
            raise _Refusal(400, "invalid_request_error", message, param="line_items")
        subscription_data = params.get("subscription_data", {})
        amount = sum(
            p["unit_amount"] * _int(line.get("quantity", 1)) for p, line in zip(prices, lines, strict=True)
        )
        if subscription_data.get("trial_period_days"):
            amount = 0
        session_id = self._id("cs_test")
        session: Json = {
            "id": session_id,
            "object": "checkout.session",
            "amount_subtotal": amount,
            "amount_total": amount,
            "cancel_url": params.get("cancel_url"),
            "client_reference_id": params.get("client_reference_id"),
            "created": self.clock,
            "currency": prices[0]["currency"],
            "customer": customer or None,
            "customer_email": params.get("customer_email"),
            "expires_at": self.clock + 86400,
            "livemode": False,
            "metadata": dict(params.get("metadata", {})),
            "mode": mode,
            "payment_intent": None,
            "payment_status": "unpaid",
            "status": "open",
            "subscription": None,
            "success_url": _required(params, "success_url"),
            "ui_mode": "hosted",
            "url": f"https://checkout.stripe.com/c/pay/{session_id}",
        }
        self._sessions[session_id] = session
        self._session_orders[session_id] = {
            "line_items": lines,
            "subscription_data": subscription_data,
            "payment_intent_data": params.get("payment_intent_data", {}),
        }
        return session

    def _line_price(self, line: Json) -> Json:
        """A line's price: a catalog price by id, or an inline `price_data` (kept off the price
        list, as Stripe keeps the one-off prices it makes for it)."""
        if line.get("price"):
            return self._get(self._prices, "price", line["price"])
        data = line.get("price_data")
        if not isinstance(data, dict):
            raise _Refusal(
                400, "invalid_request_error", "A line item needs a price or price_data.", param="line_items"
            )
        product = data.get("product_data")
        if not (data.get("product") or (isinstance(product, dict) and product.get("name"))):
            message = "price_data needs a product or product_data with a name."
            raise _Refusal(400, "invalid_request_error", message, param="line_items")
        recurring = data.get("recurring")
        return {
            "currency": str(_required(data, "currency")).lower(),
            "unit_amount": _int(_required(data, "unit_amount")),
            "recurring": {"interval": recurring["interval"]} if isinstance(recurring, dict) else None,
        }

    def _create_portal(self, _: str, params: Json) -> Json:
        customer = self._get(self._customers, "customer", _required(params, "customer"))
        portal_id = self._id("bps")
        return {
            "id": portal_id,
            "object": "billing_portal.session",
            "configuration": "bpc_double",
            "created": self.clock,
            "customer": customer["id"],
            "flow": None,
            "livemode": False,
            "locale": None,
            "on_behalf_of": None,
            "return_url": params.get("return_url"),
            "url": f"https://billing.stripe.com/p/session/test_{portal_id}",
        }

    # -- subscriptions -------------------------------------------------------------------------

    def _update_subscription(self, subscription_id: str, params: Json) -> Json:
        subscription = self._subscription(subscription_id)
        if subscription["status"] in ("canceled", "incomplete_expired"):
            message = "A canceled subscription can only update its cancellation_details and metadata."
            raise _Refusal(400, "invalid_request_error", message)
        before = self._subscription_view(subscription)
        items = copy.deepcopy(subscription["items"]["data"])
        for change in params.get("items", []):
            self._change_item(subscription, items, change)
        prorations = self._prorations(subscription, subscription["items"]["data"], items)
        behaviour = params.get("proration_behavior", "create_prorations")
        invoice_now = behaviour == "always_invoice" and bool(prorations)
        declined = invoice_now and self.decline_next_payment and sum(p["amount"] for p in prorations) > 0
        if declined and params.get("payment_behavior") == "error_if_incomplete":
            self.decline_next_payment = False
            raise _Refusal(402, "card_error", "Your card was declined.", code="card_declined")
        subscription["items"]["data"] = items
        subscription["items"]["total_count"] = len(items)
        if "cancel_at_period_end" in params:
            cancel = _bool(params["cancel_at_period_end"])
            subscription["cancel_at_period_end"] = cancel
            subscription["cancel_at"] = items[0]["current_period_end"] if cancel and items else None
        metadata = params.get("metadata")
        if metadata == "":
            subscription["metadata"] = {}
        elif isinstance(metadata, dict):
            for key, value in metadata.items():
                if value == "":  # Stripe's way to unset one key
                    subscription["metadata"].pop(key, None)
                else:
                    subscription["metadata"][key] = value
        if behaviour != "none":
            for proration in prorations:
                self._invoice_items[proration["id"]] = proration
        if invoice_now:
            now = self.clock
            invoice = self._new_invoice(subscription, "subscription_update", now, now, cycle=False)
            self._event("invoice.finalized", self._invoice_view(invoice))
            self._settle(invoice, paid=not declined)
            self.decline_next_payment = self.decline_next_payment and not declined
            if declined:
                subscription["status"] = "past_due"
        self._updated(subscription, before)
        return self._subscription_view(subscription)

    def _change_item(self, subscription: Json, items: list[Json], change: Json) -> None:
        if "id" not in change:
            price = self._get(self._prices, "price", _required(change, "price"))
            first = items[0] if items else None
            now = self.clock
            start = first["current_period_start"] if first else now
            end = (
                first["current_period_end"]
                if first
                else _add_interval(now, price["recurring"]["interval"], 1)
            )
            cycle = self._cycles[first["id"]] if first else 1
            self._add_item(subscription, price, _int(change.get("quantity", 1)), start, end, cycle, items)
            return
        item = next((i for i in items if i["id"] == change["id"]), None)
        if item is None:
            raise _no_such("subscription_item", change["id"])
        if _bool(change.get("deleted")):
            items.remove(item)
            return
        if "price" in change:
            item["price"] = self._get(self._prices, "price", change["price"])
        if "quantity" in change:
            item["quantity"] = _int(change["quantity"])

    def _prorations(self, subscription: Json, old: list[Json], new: list[Json]) -> list[Json]:
        """Pending invoice items for the rest of the period, as Stripe makes them: a credit for
        the unused time on each changed item and a charge for the remaining time on its new form."""
        now, prorations = self.clock, []
        if subscription["status"] == "trialing":  # nothing is charged during a trial
            return []
        before = {item["id"]: item for item in old}
        after = {item["id"]: item for item in new}
        for item_id in dict.fromkeys([*before, *after]):
            was, now_is = before.get(item_id), after.get(item_id)
            if (
                was
                and now_is
                and (was["quantity"], was["price"]["id"]) == (now_is["quantity"], now_is["price"]["id"])
            ):
                continue
            for item, sign, wording in ((was, -1, "Unused time on"), (now_is, 1, "Remaining time on")):
                if item is None:
                    continue
                start, end = item["current_period_start"], item["current_period_end"]
                fraction = max(0, end - now) / (end - start) if end > start else 0
                amount = sign * round(item["price"]["unit_amount"] * item["quantity"] * fraction)
                name = self._products[item["price"]["product"]]["name"]
                day = datetime.fromtimestamp(now, UTC).strftime("%d %b %Y")
                description = f"{wording} {item['quantity']} × {name} after {day}"
                prorations.append(
                    self._new_invoice_item(
                        subscription["customer"], subscription["id"], amount, item["price"]["currency"],
                        description, now, end, {}, price=item["price"], quantity=item["quantity"],
                        subscription_item=item["id"], proration=True,
                    )
                )  # fmt: skip
        return prorations

    def _cancel_subscription(self, subscription_id: str, _: Json) -> Json:
        subscription = self._subscription(subscription_id)
        if subscription["status"] in ("canceled", "incomplete_expired"):
            raise _Refusal(400, "invalid_request_error", "This subscription has already been canceled.")
        subscription.update(status="canceled", canceled_at=self.clock, ended_at=self.clock, cancel_at=None)
        subscription["cancel_at_period_end"] = False
        view = self._subscription_view(subscription)
        self._event("customer.subscription.deleted", view)
        return view

    def _add_item(
        self,
        subscription: Json,
        price: Json,
        quantity: int,
        start: int,
        end: int,
        cycle: int,
        items: list[Json] | None = None,
    ) -> None:
        item_id = self._id("si")
        (subscription["items"]["data"] if items is None else items).append(
            {
                "id": item_id,
                "object": "subscription_item",
                "created": self.clock,
                "current_period_end": end,
                "current_period_start": start,
                "discounts": [],
                "metadata": {},
                "price": price,
                "quantity": quantity,
                "subscription": subscription["id"],
                "tax_rates": [],
            }
        )
        subscription["items"]["total_count"] = len(subscription["items"]["data"])
        self._cycles[item_id] = cycle

    def _renewal(self, subscription_id: str, *, paid: bool) -> list[Json]:
        with self._lock:
            subscription = self._subscription(subscription_id)
            before = self._subscription_view(subscription)
            first = subscription["items"]["data"][0]
            period = first["current_period_start"], first["current_period_end"]
            for item in subscription["items"]["data"]:
                self._cycles[item["id"]] += 1
                item["current_period_start"] = item["current_period_end"]
                item["current_period_end"] = _add_interval(
                    subscription["billing_cycle_anchor"],
                    item["price"]["recurring"]["interval"],
                    self._cycles[item["id"]],
                )
            # Stripe dates a renewal invoice by the period that ended; its lines by the one begun.
            invoice = self._new_invoice(subscription, "subscription_cycle", *period)
            events = [
                self._event("invoice.finalized", self._invoice_view(invoice)),
                self._settle(invoice, paid=paid),
            ]
            subscription["status"] = "active" if paid else "past_due"
            events.append(self._updated(subscription, before))
            return events

    # -- invoices ------------------------------------------------------------------------------

    def _create_invoice_item(self, _: str, params: Json) -> Json:
        customer = self._get(self._customers, "customer", _required(params, "customer"))
        subscription = params.get("subscription")
        if subscription and self._subscription(subscription)["customer"] != customer["id"]:
            raise _Refusal(400, "invalid_request_error", "The subscription belongs to another customer.")
        period = params.get("period", {})
        now = self.clock
        return self._new_invoice_item(
            customer["id"],
            subscription,
            _int(_required(params, "amount")),
            str(_required(params, "currency")).lower(),
            params.get("description"),
            _int(period.get("start", now)),
            _int(period.get("end", now)),
            params.get("metadata", {}),
        )

    def _new_invoice_item(
        self,
        customer: str,
        subscription: str | None,
        amount: int,
        currency: str,
        description: str | None,
        start: int,
        end: int,
        metadata: Json,
        *,
        price: Json | None = None,
        quantity: int = 1,
        subscription_item: str | None = None,
        proration: bool = False,
    ) -> Json:
        item: Json = {
            "id": self._id("ii"),
            "object": "invoiceitem",
            "amount": amount,
            "currency": currency,
            "customer": customer,
            "date": self.clock,
            "description": description,
            "discountable": not proration,
            "discounts": [],
            "invoice": None,
            "livemode": False,
            "metadata": dict(metadata),
            "net_amount": amount,
            "parent": {
                "type": "subscription_details",
                "subscription_details": {
                    "subscription": subscription,
                    "subscription_item": subscription_item,
                },
            }
            if subscription
            else None,
            "period": {"start": start, "end": end},
            "pricing": {
                "type": "price_details",
                "price_details": {"price": price["id"], "product": price["product"]},
                "unit_amount_decimal": price["unit_amount_decimal"],
            }
            if price
            else None,
            "proration": proration,
            "proration_details": {"credited_items": None},
            "quantity": quantity,
            "quantity_decimal": str(quantity),
            "tax_rates": [],
            "test_clock": None,
        }
        if not proration:  # a proration is kept only when the update is (see _update_subscription)
            self._invoice_items[item["id"]] = item
        return item

    def _new_invoice(
        self,
        subscription: Json,
        reason: str,
        start: int,
        end: int,
        *,
        trial: bool = False,
        cycle: bool = True,
    ) -> Json:
        """An open (finalized) invoice for the subscription's pending items and, on a cycle, its
        items for the period now begun."""
        invoice_id, now = self._id("in"), self.clock
        lines = [
            self._item_line(invoice_id, subscription, item, trial=trial)
            for item in (subscription["items"]["data"] if cycle else [])
        ]
        for pending in list(self._invoice_items.values()):
            pending_sub = (pending["parent"] or {}).get("subscription_details", {}).get("subscription")
            mine = pending["customer"] == subscription["customer"] and pending_sub in (
                None,
                subscription["id"],
            )
            if pending["invoice"] is None and mine:
                pending["invoice"] = invoice_id
                lines.append(self._pending_line(invoice_id, pending))
        total = sum(line["amount"] for line in lines)
        invoice: Json = {
            "id": invoice_id,
            "object": "invoice",
            "account_country": "US",
            "account_name": "Stripe double",
            "amount_due": max(total, 0),
            "amount_overpaid": 0,
            "amount_paid": 0,
            "amount_remaining": max(total, 0),
            "amount_shipping": 0,
            "attempt_count": 0,
            "attempted": False,
            "auto_advance": True,
            "automatic_tax": {"enabled": False, "liability": None, "provider": None, "status": None},
            "billing_reason": reason,
            "collection_method": "charge_automatically",
            "created": now,
            "currency": subscription["currency"],
            "customer": subscription["customer"],
            "customer_email": self._customers[subscription["customer"]]["email"],
            "description": None,
            "discounts": [],
            "due_date": None,
            "effective_at": now,
            "ending_balance": 0,
            "hosted_invoice_url": f"https://invoice.stripe.com/i/acct_double/{invoice_id}",
            "invoice_pdf": f"https://pay.stripe.com/invoice/acct_double/{invoice_id}/pdf",
            "livemode": False,
            "metadata": {},
            "next_payment_attempt": None,
            "number": f"DBL-{next(self._numbers):04d}",
            "parent": {
                "type": "subscription_details",
                "quote_details": None,
                "subscription_details": {
                    "metadata": dict(subscription["metadata"]),
                    "subscription": subscription["id"],
                    "subscription_proration_date": None,
                },
            },
            "period_end": end,
            "period_start": start,
            "starting_balance": 0,
            "status": "open",
            "status_transitions": {
                "finalized_at": now,
                "marked_uncollectible_at": None,
                "paid_at": None,
                "voided_at": None,
            },
            "subtotal": total,
            "subtotal_excluding_tax": total,
            "total": total,
            "total_discount_amounts": [],
            "total_excluding_tax": total,
            "total_taxes": [],
            "webhooks_delivered_at": None,
        }
        self._invoices[invoice_id] = invoice
        self._lines[invoice_id] = lines
        subscription["latest_invoice"] = invoice_id
        return invoice

    def _item_line(self, invoice_id: str, subscription: Json, item: Json, *, trial: bool) -> Json:
        price, quantity = item["price"], item["quantity"]
        name = self._products[price["product"]]["name"]
        interval = price["recurring"]["interval"]
        description = (
            f"Trial period for {name}"
            if trial
            else f"{quantity} × {name} (at {price['unit_amount'] / 100:.2f} / {interval})"
        )
        return self._line(
            invoice_id,
            amount=0 if trial else price["unit_amount"] * quantity,
            currency=price["currency"],
            description=description,
            parent={
                "type": "subscription_item_details",
                "invoice_item_details": None,
                "subscription_item_details": {
                    "invoice_item": None,
                    "proration": False,
                    "proration_details": {"credited_items": None},
                    "subscription": subscription["id"],
                    "subscription_item": item["id"],
                },
            },
            period={"start": item["current_period_start"], "end": item["current_period_end"]},
            pricing={
                "type": "price_details",
                "price_details": {"price": price["id"], "product": price["product"]},
                "unit_amount_decimal": price["unit_amount_decimal"],
            },
            quantity=quantity,
            metadata={},
        )

    def _pending_line(self, invoice_id: str, pending: Json) -> Json:
        details = (pending["parent"] or {}).get("subscription_details") or {}
        if details.get("subscription_item"):  # a proration: Stripe files it under its item
            parent: Json = {
                "type": "subscription_item_details",
                "invoice_item_details": None,
                "subscription_item_details": {
                    "invoice_item": pending["id"],
                    "proration": pending["proration"],
                    "proration_details": {"credited_items": None},
                    "subscription": details["subscription"],
                    "subscription_item": details["subscription_item"],
                },
            }
        else:
            parent = {
                "type": "invoice_item_details",
                "subscription_item_details": None,
                "invoice_item_details": {
                    "invoice_item": pending["id"],
                    "proration": pending["proration"],
                    "proration_details": {"credited_items": None},
                    "subscription": details.get("subscription"),
                },
            }
        return self._line(
            invoice_id,
            amount=pending["amount"],
            currency=pending["currency"],
            description=pending["description"],
            parent=parent,
            period=dict(pending["period"]),
            pricing=copy.deepcopy(pending["pricing"]),
            quantity=pending["quantity"],
            metadata=dict(pending["metadata"]),
        )

    def _line(self, invoice_id: str, **fields: Any) -> Json:
        return {
            "id": self._id("il"),
            "object": "line_item",
            "discount_amounts": [],
            "discountable": True,
            "discounts": [],
            "invoice": invoice_id,
            "livemode": False,
            "pretax_credit_amounts": [],
            "subtotal": fields["amount"],
            "taxes": [],
            **fields,
        }

    def _settle(self, invoice: Json, *, paid: bool) -> Json:
        """Charge the invoice; the event Stripe sends for the outcome."""
        now = self.clock
        invoice["attempted"] = True
        if paid:
            invoice.update(status="paid", amount_paid=invoice["amount_due"], amount_remaining=0)
            invoice.update(next_payment_attempt=None)
            invoice["status_transitions"]["paid_at"] = now
            return self._event("invoice.paid", self._invoice_view(invoice))
        invoice["attempt_count"] += 1
        invoice["next_payment_attempt"] = now + RETRY_AFTER
        return self._event("invoice.payment_failed", self._invoice_view(invoice))

    def _list_invoices(self, _: str, params: Json) -> Json:
        invoices = [
            self._invoice_view(invoice)
            for invoice in reversed(self._invoices.values())
            if all(
                params.get(name) in (None, value)
                for name, value in (
                    ("customer", invoice["customer"]),
                    ("subscription", invoice["parent"]["subscription_details"]["subscription"]),
                    ("status", invoice["status"]),
                )
            )
        ]
        return self._page(invoices, params, "/v1/invoices")

    def _list_lines(self, invoice_id: str, params: Json) -> Json:
        return self._page(
            self._lines[self._invoice(invoice_id)["id"]], params, f"/v1/invoices/{invoice_id}/lines"
        )

    # -- state ---------------------------------------------------------------------------------

    def _id(self, prefix: str) -> str:
        return f"{prefix}_dbl{next(self._ids):08d}"

    @staticmethod
    def _get(table: dict[str, Json], kind: str, object_id: str) -> Json:
        if object_id not in table:
            raise _no_such(kind, object_id)
        return table[object_id]

    def _subscription(self, subscription_id: str) -> Json:
        return self._get(self._subscriptions, "subscription", subscription_id)

    def _invoice(self, invoice_id: str) -> Json:
        return self._get(self._invoices, "invoice", invoice_id)

    def _subscription_view(self, subscription: Json) -> Json:
        """A copy with each item's price as it stands now (a moved lookup key shows)."""
        view = copy.deepcopy(subscription)
        for item in view["items"]["data"]:
            item["price"] = copy.deepcopy(self._prices[item["price"]["id"]])
        return view

    def _invoice_view(self, invoice: Json) -> Json:
        lines = self._lines[invoice["id"]]
        view = copy.deepcopy(invoice)
        view["lines"] = {
            "object": "list",
            "data": copy.deepcopy(lines[:INLINE_LINES]),
            "has_more": len(lines) > INLINE_LINES,
            "total_count": len(lines),
            "url": f"/v1/invoices/{invoice['id']}/lines",
        }
        return view

    def _updated(self, subscription: Json, before: Json) -> Json:
        after = self._subscription_view(subscription)
        previous = {key: value for key, value in before.items() if after.get(key) != value}
        return self._event("customer.subscription.updated", after, previous)

    def _event(self, kind: str, snapshot: Json, previous: Json | None = None) -> Json:
        data: Json = {"object": copy.deepcopy(snapshot)}
        if previous:
            data["previous_attributes"] = copy.deepcopy(previous)
        event: Json = {
            "id": self._id("evt"),
            "object": "event",
            "api_version": API_VERSION,
            "created": self.clock,
            "data": data,
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": kind,
        }
        self.events.append(event)
        return event
