"""The payment provider port: what billing asks of Stripe, or of the local provider that
stands in for it when no Stripe key is set.

Billing's workflows never see the `stripe` package: they call this port with plain values
and get plain values back. Two implementations:

- `stripe_provider.StripeProvider`: the official `stripe` package, API version pinned. Its
  calls only *ask* Stripe for a change; Nexus's state follows from the webhooks Stripe then
  sends (webhooks.py), re-read from Stripe so that their order does not matter.
- `local_provider.LocalProvider`: no network. Checkouts complete at once, invoices are paid
  when issued; the workflows apply its answers directly.

Errors (both implementations raise only these, never a `stripe` exception):

    ProviderError
     +-- ProviderUnavailable   could not reach the provider, timed out, or a 5xx/429: retry
     +-- ProviderRejected      the provider refused (card declined, invalid request): `code`
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


class ProviderError(Exception):
    """Every failure the port reports; the message never holds a secret."""


class ProviderUnavailable(ProviderError):
    """The provider could not be reached or answered 429/5xx; nothing is known to have changed,
    and the same call with the same idempotency key may be retried."""


class ProviderRejected(ProviderError):
    def __init__(self, message: str, code: str = ""):
        super().__init__(message)
        self.code = code  # the provider's error code, e.g. `card_declined`


@dataclass(frozen=True)
class PriceRef:
    """A catalog price as the provider knows it, by lookup key: `nexus_<kind>_<id>`, e.g.
    `nexus_plan_pro`, `nexus_seat_pro`, `nexus_addon_liminal`."""

    lookup_key: str
    product_name: str
    unit_amount_minor: int  # cents
    currency: str  # ISO 4217, upper case as in the catalog; the provider may lower it
    interval: str  # month | year


@dataclass(frozen=True)
class LineItem:
    lookup_key: str
    quantity: int


@dataclass(frozen=True)
class CheckoutRequest:
    tenant_id: str
    customer_id: str  # "" when the tenant has none yet: the provider creates one
    customer_email: str
    items: Sequence[LineItem]
    success_url: str
    cancel_url: str
    trial_days: int
    idempotency_key: str
    metadata: Mapping[str, str] = field(default_factory=dict)  # tenant_id, plan_id, seats


@dataclass(frozen=True)
class PaymentCheckoutRequest:
    """A one-off payment (a credit purchase): Stripe Checkout in `payment` mode, or a
    Revolut Merchant order. `reference` is Nexus's purchase id, carried back by the provider
    (Stripe: `client_reference_id` and metadata; Revolut: `merchant_order_data.reference`)."""

    tenant_id: str
    reference: str
    customer_id: str  # "" when the tenant has none yet (Stripe then asks for an email)
    customer_email: str
    description: str  # what the payer sees, e.g. "Starter credits (10,000) × 2"
    amount_minor: int
    currency: str
    success_url: str
    cancel_url: str
    idempotency_key: str
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckoutSession:
    id: str
    url: str
    expire_time: datetime
    customer_id: str = ""


@dataclass(frozen=True)
class PortalSession:
    id: str
    url: str


@dataclass(frozen=True)
class ProviderSubscription:
    """A provider subscription as it stands now (re-read, never taken from an event body).
    `status` is Stripe's: incomplete, incomplete_expired, trialing, active, past_due, unpaid,
    canceled, paused. `items` are by lookup key (plan, seats, add-ons)."""

    id: str
    customer_id: str
    status: str
    items: Mapping[str, int]  # lookup_key -> quantity
    current_period_start: datetime
    current_period_end: datetime
    cancel_at_period_end: bool
    metadata: Mapping[str, str]
    created: datetime
    canceled_at: datetime | None = None
    ended_at: datetime | None = None
    trial_end: datetime | None = None
    latest_invoice_id: str = ""


@dataclass(frozen=True)
class ProviderInvoiceLine:
    description: str
    lookup_key: str  # "" for invoice items without a catalog price (overage, adjustments)
    quantity: int
    amount_minor: int
    proration: bool
    period_start: datetime
    period_end: datetime
    metadata: Mapping[str, str] = field(default_factory=dict)  # nexus_kind, metric, ...


@dataclass(frozen=True)
class ProviderInvoice:
    """`status` is Stripe's: draft, open, paid, void, uncollectible."""

    id: str
    customer_id: str
    subscription_id: str
    number: str
    status: str
    currency: str
    subtotal_minor: int
    total_minor: int
    amount_due_minor: int
    amount_paid_minor: int
    amount_remaining_minor: int
    period_start: datetime
    period_end: datetime
    created: datetime
    lines: Sequence[ProviderInvoiceLine]
    attempt_count: int = 0
    next_payment_attempt: datetime | None = None
    due_date: datetime | None = None
    paid_at: datetime | None = None
    hosted_invoice_url: str = ""
    invoice_pdf: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ProviderCheckout:
    """A checkout session as it stands now: `status` open | complete | expired,
    `payment_status` paid | unpaid | no_payment_required."""

    id: str
    mode: str  # subscription | payment
    status: str
    payment_status: str
    customer_id: str
    subscription_id: str
    metadata: Mapping[str, str]
    amount_total_minor: int = 0
    reference: str = ""  # Stripe's client_reference_id, Revolut's merchant order reference
    currency: str = ""


@dataclass(frozen=True)
class InvoiceItemRequest:
    customer_id: str
    subscription_id: str
    amount_minor: int
    currency: str
    description: str
    period_start: datetime
    period_end: datetime
    idempotency_key: str  # e.g. `overage:<sub>:<period start>:<metric>`: created once
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SyncReport:
    created: Sequence[str]  # lookup keys created
    updated: Sequence[str]  # lookup keys whose price changed (a new price took the key)
    unchanged: Sequence[str]


class CreditsCheckout(Protocol):
    """What credit purchases need of a provider: Stripe, or Revolut Merchant (credits only).
    `get_checkout` re-reads a payment as it stands now: for Revolut, an order whose state is
    `completed` is `status="complete", payment_status="paid"`."""

    name: str

    async def create_payment_checkout(self, request: PaymentCheckoutRequest) -> CheckoutSession: ...

    async def get_checkout(self, session_id: str) -> ProviderCheckout: ...


class PaymentProvider(Protocol):
    name: str  # "stripe" | "local"

    async def sync_catalog(self, prices: Sequence[PriceRef]) -> SyncReport:
        """Products and prices in step with the catalog, by lookup key; idempotent."""
        ...

    async def create_checkout(self, request: CheckoutRequest) -> CheckoutSession: ...

    async def create_portal(self, customer_id: str, return_url: str) -> PortalSession: ...

    async def create_payment_checkout(self, request: PaymentCheckoutRequest) -> CheckoutSession:
        """A Checkout Session in `payment` mode for a one-off amount (a credit purchase)."""
        ...

    async def get_subscription(self, subscription_id: str) -> ProviderSubscription: ...

    async def get_invoice(self, invoice_id: str) -> ProviderInvoice: ...

    async def get_checkout(self, session_id: str) -> ProviderCheckout: ...

    async def update_items(
        self,
        subscription_id: str,
        items: Sequence[LineItem],
        *,
        prorate: bool,
        idempotency_key: str,
    ) -> ProviderSubscription:
        """Make the subscription's items exactly `items` (add, change quantity, remove);
        `prorate`: Stripe's `create_prorations` with an immediate invoice, else `none`."""
        ...

    async def set_cancel_at_period_end(
        self, subscription_id: str, cancel: bool, *, idempotency_key: str
    ) -> ProviderSubscription: ...

    async def cancel_now(self, subscription_id: str, *, idempotency_key: str) -> ProviderSubscription: ...

    async def add_invoice_item(self, request: InvoiceItemRequest) -> str:
        """The invoice item's id; the same idempotency key returns the same item."""
        ...
