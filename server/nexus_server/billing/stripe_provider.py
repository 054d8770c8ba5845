"""The payment provider port on Stripe, through the official `stripe` package.

Shapes. `API_VERSION` is pinned because every field this module reads depends on it: since the
2025 "basil" versions a subscription's `current_period_start/end` live on its items, an invoice's
subscription on `parent.subscription_details`, and an invoice line's price and proration flag on
`pricing.price_details` and `parent.*_details`. Moving the pin means re-reading those shapes.

Calls. Each call is the client's synchronous method run in a worker thread (`asyncio.to_thread`):
its `*_async` methods need httpx or aiohttp, and neither was installed when this was written (httpx
now is, for the Revolut client; moving Stripe onto it is a change of its own). One requests session,
owned here, serves every thread, so `close()` can release its sockets.

One-off payments (credit purchases) are Checkout Sessions in `payment` mode with an inline
`price_data` line: the amount is the purchase's, not a catalog price, so nothing is synced for it.
Nexus's purchase id goes out as `client_reference_id` and in the metadata of both the session and
its payment intent (what the Dashboard shows on the charge), and `get_checkout` reads it back.

Idempotency. Every POST carries an idempotency key: the caller's, or for the catalog one derived
from what is being created, so a retry after a lost answer creates nothing twice. Stripe refuses a
key re-used with other parameters, so `update_items` sends nothing when the subscription already
matches (the retry after a success finds it so), and `cancel_now` nothing when it is canceled.

Prices are named by lookup key. The key moves to a new price when the catalog changes, leaving old
subscriptions on prices without one, so a price is also known by the `nexus_lookup_key` metadata of
its product, which `sync_catalog` writes. Both directions are cached on the instance.

Errors: `stripe` exceptions never leave this module; see provider.py for the two kinds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import requests
import stripe

from nexus_server.billing.provider import (
    CheckoutRequest,
    CheckoutSession,
    InvoiceItemRequest,
    LineItem,
    PaymentCheckoutRequest,
    PortalSession,
    PriceRef,
    ProviderCheckout,
    ProviderError,
    ProviderInvoice,
    ProviderInvoiceLine,
    ProviderRejected,
    ProviderSubscription,
    ProviderUnavailable,
    SyncReport,
)

if TYPE_CHECKING:
    from stripe import InvoiceLineItem, Price, StripeObject, Subscription
    from stripe.params import SubscriptionUpdateParamsItem

API_VERSION = "2026-10-28.endive"
LOOKUP_KEY_METADATA = "nexus_lookup_key"  # on products, so a price is known after losing its key
_LOOKUP_KEYS_PER_LIST = 10  # Stripe's limit for `lookup_keys` in one prices.list
_SUBSCRIPTION_EXPAND = ["items.data.price.product"]
_ENDED = frozenset({"canceled", "incomplete_expired"})

_P = ParamSpec("_P")
_T = TypeVar("_T")


class StripeProvider:
    name = "stripe"

    def __init__(
        self, api_key: str, *, api_base: str | None = None, timeout: float = 10.0, max_retries: int = 2
    ):
        self._session = requests.Session()
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base} if api_base else None,
            stripe_version=API_VERSION,
            max_network_retries=max_retries,
            http_client=stripe.RequestsClient(timeout=timeout, session=self._session),
        )
        self._price_by_key: dict[str, str] = {}
        self._key_by_price: dict[str, str] = {}  # "" for prices outside the catalog

    def close(self) -> None:
        self._session.close()

    async def sync_catalog(self, prices: Sequence[PriceRef]) -> SyncReport:
        found = await self._list_prices([ref.lookup_key for ref in prices])
        created: list[str] = []
        updated: list[str] = []
        unchanged: list[str] = []
        for ref in prices:
            price = found.get(ref.lookup_key)
            if price is None:
                product = await self._call(
                    self._client.v1.products.create,
                    params={"name": ref.product_name, "metadata": {LOOKUP_KEY_METADATA: ref.lookup_key}},
                    options={"idempotency_key": f"nexus-catalog:product:{ref.lookup_key}"},
                )
                await self._create_price(ref, product.id, replacing="")
                created.append(ref.lookup_key)
            elif _differs(price, ref):
                await self._create_price(ref, _id(price.product), replacing=price.id)
                updated.append(ref.lookup_key)
            else:
                unchanged.append(ref.lookup_key)
        return SyncReport(created=created, updated=updated, unchanged=unchanged)

    async def create_checkout(self, request: CheckoutRequest) -> CheckoutSession:
        price_ids = await self._price_ids([item.lookup_key for item in request.items])
        metadata = dict(request.metadata)
        session = await self._call(
            self._client.v1.checkout.sessions.create,
            params={
                "mode": "subscription",
                "line_items": [
                    {"price": price_ids[item.lookup_key], "quantity": item.quantity} for item in request.items
                ],
                **(
                    {"customer": request.customer_id}
                    if request.customer_id
                    else {"customer_email": request.customer_email}
                ),
                "client_reference_id": request.tenant_id,
                "metadata": metadata,
                "subscription_data": {
                    "metadata": metadata,
                    **({"trial_period_days": request.trial_days} if request.trial_days > 0 else {}),
                },
                "success_url": request.success_url,
                "cancel_url": request.cancel_url,
            },
            options={"idempotency_key": request.idempotency_key},
        )
        return CheckoutSession(
            id=session.id,
            url=session.url or "",
            expire_time=_time(session.expires_at),
            customer_id=_id(session.customer),
        )

    async def create_payment_checkout(self, request: PaymentCheckoutRequest) -> CheckoutSession:
        # The reference also rides in the metadata: webhooks and the Dashboard show metadata, and
        # a caller's own `reference` key must not override the purchase id.
        metadata = {**request.metadata, "reference": request.reference}
        session = await self._call(
            self._client.v1.checkout.sessions.create,
            params={
                "mode": "payment",
                "line_items": [
                    {
                        "price_data": {
                            "currency": request.currency.lower(),
                            "unit_amount": request.amount_minor,
                            "product_data": {"name": request.description},
                        },
                        "quantity": 1,
                    }
                ],
                **(
                    {"customer": request.customer_id}
                    if request.customer_id
                    else {"customer_email": request.customer_email}
                ),
                "client_reference_id": request.reference,
                "metadata": metadata,
                "payment_intent_data": {"metadata": metadata},
                "success_url": request.success_url,
                "cancel_url": request.cancel_url,
            },
            options={"idempotency_key": request.idempotency_key},
        )
        return CheckoutSession(
            id=session.id,
            url=session.url or "",
            expire_time=_time(session.expires_at),
            customer_id=_id(session.customer),
        )

    async def create_portal(self, customer_id: str, return_url: str) -> PortalSession:
        # No key from the port: a second portal session harms nothing, and the client still
        # gives its own retries one key.
        session = await self._call(
            self._client.v1.billing_portal.sessions.create,
            params={"customer": customer_id, "return_url": return_url},
        )
        return PortalSession(id=session.id, url=session.url)

    async def get_subscription(self, subscription_id: str) -> ProviderSubscription:
        return self._subscription(await self._retrieve_subscription(subscription_id))

    async def get_invoice(self, invoice_id: str) -> ProviderInvoice:
        invoice = await self._call(self._client.v1.invoices.retrieve, invoice_id)
        lines: list[InvoiceLineItem] = list(invoice.lines.data)
        if invoice.lines.has_more:  # the invoice holds the first page only
            lines = await self._call(self._all_lines, invoice_id)
        parent = invoice.parent
        subscription = (
            parent.subscription_details.subscription if parent and parent.subscription_details else None
        )
        transitions = invoice.status_transitions
        return ProviderInvoice(
            id=invoice.id,
            customer_id=_id(invoice.customer),
            subscription_id=_id(subscription),
            number=invoice.number or "",
            status=invoice.status or "",
            currency=invoice.currency.upper(),
            subtotal_minor=invoice.subtotal,
            total_minor=invoice.total,
            amount_due_minor=invoice.amount_due,
            amount_paid_minor=invoice.amount_paid,
            amount_remaining_minor=invoice.amount_remaining,
            period_start=_time(invoice.period_start),
            period_end=_time(invoice.period_end),
            created=_time(invoice.created),
            lines=[await self._line(line) for line in lines],
            attempt_count=invoice.attempt_count,
            next_payment_attempt=_maybe_time(invoice.next_payment_attempt),
            due_date=_maybe_time(invoice.due_date),
            paid_at=_maybe_time(transitions.paid_at if transitions else None),
            hosted_invoice_url=invoice.hosted_invoice_url or "",
            invoice_pdf=invoice.invoice_pdf or "",
            metadata=_metadata(invoice.metadata),
        )

    async def get_checkout(self, session_id: str) -> ProviderCheckout:
        session = await self._call(self._client.v1.checkout.sessions.retrieve, session_id)
        return ProviderCheckout(
            id=session.id,
            mode=session.mode,
            status=session.status or "",
            payment_status=session.payment_status,
            customer_id=_id(session.customer),
            subscription_id=_id(session.subscription),
            metadata=_metadata(session.metadata),
            amount_total_minor=session.amount_total or 0,
            reference=session.client_reference_id or "",
            currency=(session.currency or "").upper(),
        )

    async def update_items(
        self, subscription_id: str, items: Sequence[LineItem], *, prorate: bool, idempotency_key: str
    ) -> ProviderSubscription:
        subscription = await self._retrieve_subscription(subscription_id)
        changes = await self._item_changes(subscription, items)
        if not changes:
            return self._subscription(subscription)
        await self._call(
            self._client.v1.subscriptions.update,
            subscription_id,
            params={
                "items": changes,
                "proration_behavior": "always_invoice" if prorate else "none",
                # A declined proration then refuses the whole change instead of leaving it unpaid.
                **({"payment_behavior": "error_if_incomplete"} if prorate else {}),
            },
            options={"idempotency_key": idempotency_key},
        )
        # Re-read: a replayed answer is the subscription as it was at the first attempt.
        return await self.get_subscription(subscription_id)

    async def set_cancel_at_period_end(
        self, subscription_id: str, cancel: bool, *, idempotency_key: str
    ) -> ProviderSubscription:
        await self._call(
            self._client.v1.subscriptions.update,
            subscription_id,
            params={"cancel_at_period_end": cancel},
            options={"idempotency_key": idempotency_key},
        )
        return await self.get_subscription(subscription_id)

    async def cancel_now(self, subscription_id: str, *, idempotency_key: str) -> ProviderSubscription:
        subscription = await self._retrieve_subscription(subscription_id)
        if subscription.status in _ENDED:  # Stripe keys no DELETE: a second cancel would be refused
            return self._subscription(subscription)
        canceled = await self._call(
            self._client.v1.subscriptions.cancel,
            subscription_id,
            params={"prorate": False, "invoice_now": False, "expand": _SUBSCRIPTION_EXPAND},
            options={"idempotency_key": idempotency_key},
        )
        return self._subscription(canceled)

    async def add_invoice_item(self, request: InvoiceItemRequest) -> str:
        item = await self._call(
            self._client.v1.invoice_items.create,
            params={
                "customer": request.customer_id,
                **({"subscription": request.subscription_id} if request.subscription_id else {}),
                "amount": request.amount_minor,
                "currency": request.currency.lower(),
                "description": request.description,
                "period": {"start": _unix(request.period_start), "end": _unix(request.period_end)},
                "metadata": dict(request.metadata),
            },
            options={"idempotency_key": request.idempotency_key},
        )
        return item.id

    # -- calls ---------------------------------------------------------------------------------

    async def _call(self, method: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return await asyncio.to_thread(method, *args, **kwargs)
        except stripe.StripeError as error:
            raise _translate(error) from None  # the stripe error stays here; its request id goes on

    def _all_lines(self, invoice_id: str) -> list[InvoiceLineItem]:
        page = self._client.v1.invoices.line_items.list(invoice_id, params={"limit": 100})
        return list(page.auto_paging_iter())

    async def _retrieve_subscription(self, subscription_id: str) -> Subscription:
        return await self._call(
            self._client.v1.subscriptions.retrieve, subscription_id, params={"expand": _SUBSCRIPTION_EXPAND}
        )

    async def _list_prices(self, lookup_keys: Sequence[str]) -> dict[str, Price]:
        found: dict[str, Price] = {}
        for chunk in _chunks(list(dict.fromkeys(lookup_keys)), _LOOKUP_KEYS_PER_LIST):
            page = await self._call(
                self._client.v1.prices.list,
                params={"lookup_keys": chunk, "expand": ["data.product"], "limit": 100},
            )
            for price in page.data:
                self._remember(price)
                if price.lookup_key:
                    found[price.lookup_key] = price
        return found

    async def _price_ids(self, lookup_keys: Sequence[str]) -> dict[str, str]:
        missing = [key for key in lookup_keys if key not in self._price_by_key]
        if missing:
            await self._list_prices(missing)
        unknown = sorted({key for key in lookup_keys if key not in self._price_by_key})
        if unknown:
            raise ProviderRejected(
                f"no Stripe price has the lookup key {', '.join(unknown)}; is the catalog synced?",
                "price_not_found",
            )
        return {key: self._price_by_key[key] for key in lookup_keys}

    async def _create_price(self, ref: PriceRef, product_id: str, *, replacing: str) -> None:
        currency = ref.currency.lower()
        price = await self._call(
            self._client.v1.prices.create,
            params={
                "product": product_id,
                "unit_amount": ref.unit_amount_minor,
                "currency": currency,
                "recurring": {"interval": ref.interval},
                "lookup_key": ref.lookup_key,
                # Also for a new key: a price archived by hand may still hold it.
                "transfer_lookup_key": True,
            },
            # Derived from the price it replaces, so changing a price back later is a new request.
            options={
                "idempotency_key": f"nexus-catalog:price:{ref.lookup_key}:{replacing or 'new'}:"
                f"{ref.unit_amount_minor}:{currency}:{ref.interval}"
            },
        )
        self._price_by_key[ref.lookup_key] = price.id
        self._key_by_price[price.id] = ref.lookup_key

    # -- shapes --------------------------------------------------------------------------------

    def _remember(self, price: Price) -> str:
        """The price's catalog lookup key ("" outside the catalog), learnt for later."""
        key = price.lookup_key or ""
        if key:
            self._price_by_key[key] = price.id
        elif not isinstance(price.product, str) and price.product.metadata:
            key = _metadata(price.product.metadata).get(LOOKUP_KEY_METADATA, "")
        if key or not isinstance(price.product, str):  # a bare product id proves nothing yet
            self._key_by_price[price.id] = key
        return key

    async def _lookup_key_of(self, price: str | Price | None) -> str:
        if price is None:
            return ""
        if not isinstance(price, str):
            return self._remember(price)
        if price not in self._key_by_price:
            fetched = await self._call(self._client.v1.prices.retrieve, price, params={"expand": ["product"]})
            self._remember(fetched)
        return self._key_by_price.get(price, "")

    async def _item_changes(
        self, subscription: Subscription, items: Sequence[LineItem]
    ) -> list[SubscriptionUpdateParamsItem]:
        wanted: dict[str, int] = {}
        for item in items:
            wanted[item.lookup_key] = wanted.get(item.lookup_key, 0) + item.quantity
        current: dict[str, list[tuple[str, int]]] = {}
        for existing in subscription.items.data:
            key = self._remember(existing.price) or existing.price.id
            current.setdefault(key, []).append((existing.id, existing.quantity or 0))
        new_keys = [key for key in wanted if key not in current]
        price_ids = await self._price_ids(new_keys) if new_keys else {}
        changes: list[SubscriptionUpdateParamsItem] = []
        for key, quantity in wanted.items():
            if key in price_ids:
                changes.append({"price": price_ids[key], "quantity": quantity})
                continue
            (first_id, first_quantity), *extra = current.pop(key)
            if first_quantity != quantity:
                changes.append({"id": first_id, "quantity": quantity})
            changes.extend({"id": item_id, "deleted": True} for item_id, _ in extra)
        for leftover in current.values():
            changes.extend({"id": item_id, "deleted": True} for item_id, _ in leftover)
        return changes

    def _subscription(self, subscription: Subscription) -> ProviderSubscription:
        items: dict[str, int] = {}
        sub_items = subscription.items.data
        for item in sub_items:
            key = self._remember(item.price) or item.price.id  # never "": it would merge items
            items[key] = items.get(key, 0) + (item.quantity or 0)
        # Items may bill on different cycles; the first (the plan, as checkout orders them) leads.
        period = sub_items[0] if sub_items else None
        return ProviderSubscription(
            id=subscription.id,
            customer_id=_id(subscription.customer),
            status=subscription.status,
            items=items,
            current_period_start=_time(period.current_period_start if period else subscription.start_date),
            current_period_end=_time(period.current_period_end if period else subscription.start_date),
            cancel_at_period_end=subscription.cancel_at_period_end,
            metadata=_metadata(subscription.metadata),
            created=_time(subscription.created),
            canceled_at=_maybe_time(subscription.canceled_at),
            ended_at=_maybe_time(subscription.ended_at),
            trial_end=_maybe_time(subscription.trial_end),
            latest_invoice_id=_id(subscription.latest_invoice),
        )

    async def _line(self, line: InvoiceLineItem) -> ProviderInvoiceLine:
        details = line.pricing.price_details if line.pricing else None
        parent = line.parent
        proration = bool(
            parent
            and (
                (parent.subscription_item_details and parent.subscription_item_details.proration)
                or (parent.invoice_item_details and parent.invoice_item_details.proration)
            )
        )
        return ProviderInvoiceLine(
            description=line.description or "",
            lookup_key=await self._lookup_key_of(details.price if details else None),
            quantity=line.quantity or 0,
            amount_minor=line.amount,
            proration=proration,
            period_start=_time(line.period.start),
            period_end=_time(line.period.end),
            metadata=_metadata(line.metadata),
        )


def _translate(error: stripe.StripeError) -> ProviderError:
    status = error.http_status or 0
    # Stripe's own messages name keys only redacted; the request id lets support find the call.
    message = f"Stripe: {error.user_message or type(error).__name__}"
    if error.request_id:
        message += f" (request {error.request_id})"
    if isinstance(error, stripe.APIConnectionError | stripe.RateLimitError) or status >= 500 or status == 409:
        return ProviderUnavailable(message)  # 409: a concurrent request with the same key; retry
    if isinstance(error, stripe.IdempotencyError):
        return ProviderRejected(message, "idempotency_error")
    return ProviderRejected(message, error.code or "")


def _differs(price: Price, ref: PriceRef) -> bool:
    interval = price.recurring.interval if price.recurring else ""
    return (
        not price.active
        or price.unit_amount != ref.unit_amount_minor
        or price.currency != ref.currency.lower()
        or interval != ref.interval
    )


def _id(value: str | StripeObject | None) -> str:
    """The id of an expandable field, whether Stripe sent the id or the object."""
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value["id"])


def _metadata(metadata: StripeObject | None) -> dict[str, str]:
    return {str(key): str(value) for key, value in metadata.to_dict().items()} if metadata else {}


def _time(unix: int) -> datetime:
    return datetime.fromtimestamp(unix, UTC)


def _maybe_time(unix: int | None) -> datetime | None:
    return _time(unix) if unix is not None else None


def _unix(moment: datetime) -> int:
    return int(moment.timestamp())


def _chunks(values: list[str], size: int) -> Iterable[list[str]]:
    return (values[start : start + size] for start in range(0, len(values), size))
