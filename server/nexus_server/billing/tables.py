"""The billing capability's tables.

- `billing_accounts`: one row per tenant that billing has seen, naming its current
  subscription and its payment provider customer. Its row lock serialises every change to a
  tenant's billing (checkout completion, webhooks, plan changes, the cycle), so two writers
  never both decide what the current subscription is.
- `billing_subscriptions`: every subscription a tenant had; exactly one is current (the
  account says which). Mirrors the provider's subscription when there is one.
- `billing_periods`: each billing period a subscription entered, so the cycle bills a
  period's overage once it has ended even if the provider has already moved the
  subscription on (a renewal webhook can arrive before the cycle runs).
- `billing_overage_charges`: one row per tenant, period and metric billed. Its primary key
  is what makes an overage charge happen once, whatever runs the cycle and how often.
- `billing_invoices`: invoices mirrored from the provider, or issued by Nexus itself under
  the local provider; the lines are kept as JSON on the row (they are read and written whole).
- `billing_provider_events`: the provider's event ids already applied, written in the
  transaction that applies the event: a redelivery finds its id and changes nothing.
- `billing_requests`: idempotency keys of ChangePlan and CreateCheckoutSession with the
  response they returned, committed with the change they guard.
- `billing_tenant_add_ons`: the add-ons a tenant enabled and any per-tenant price.

Money is integers of the minor unit (cents); a unit price finer than a cent is a decimal
string (`"0.001"`), never a float.
"""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Boolean, Column, Index, Integer, String, Table

from nexus_server.db.schema import metadata
from nexus_server.db.types import UtcDateTime

billing_accounts = Table(
    "billing_accounts",
    metadata,
    Column("tenant_id", String(40), primary_key=True),
    Column("subscription_id", String(40), nullable=False),  # the current subscription
    Column("customer_id", String(64), nullable=True),  # the provider's customer (cus_…)
    Column("invoice_count", Integer, nullable=False),  # numbers the local provider's invoices
    Column("create_time", UtcDateTime(), nullable=False),
    Column("update_time", UtcDateTime(), nullable=False),
)

billing_subscriptions = Table(
    "billing_subscriptions",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), nullable=False),
    Column("plan_id", String(32), nullable=False),
    # trialing | active | incomplete | past_due | suspended | canceled
    Column("status", String(16), nullable=False),
    Column("seats", Integer, nullable=False),
    Column("period_start", UtcDateTime(), nullable=False),
    Column("period_end", UtcDateTime(), nullable=False),
    # Periods are counted from this day (midnight UTC): the day a paid subscription began,
    # the first of a month for the free plan.
    Column("anchor", UtcDateTime(), nullable=False),
    Column("interval", String(8), nullable=False),  # month | year
    Column("cancel_at_period_end", Boolean, nullable=False),
    Column("cancel_time", UtcDateTime(), nullable=True),
    Column("end_time", UtcDateTime(), nullable=True),
    Column("trial_end_time", UtcDateTime(), nullable=True),
    Column("grace_end_time", UtcDateTime(), nullable=True),
    Column("past_due_time", UtcDateTime(), nullable=True),  # when dunning began
    Column("reminders_sent", Integer, nullable=False),  # dunning steps done since past_due_time
    Column("scheduled_plan_id", String(32), nullable=True),
    Column("scheduled_seats", Integer, nullable=True),
    Column("provider_subscription_id", String(64), nullable=True),
    Column("provider_status", String(32), nullable=True),  # the provider's own word
    Column("cancel_reason", String(1000), nullable=True),
    Column("create_time", UtcDateTime(), nullable=False),
    Column("update_time", UtcDateTime(), nullable=False),
    Index(None, "tenant_id", "create_time"),
    Index(None, "provider_subscription_id", unique=True),
    Index(None, "status"),
)

billing_periods = Table(
    "billing_periods",
    metadata,
    Column("subscription_id", String(40), primary_key=True),
    Column("period_start", UtcDateTime(), primary_key=True),
    Column("period_end", UtcDateTime(), nullable=False),
    Column("tenant_id", String(40), nullable=False),
    Column("plan_id", String(32), nullable=False),
    Column("closed", Boolean, nullable=False),  # its overage has been billed
    Index(None, "tenant_id", "closed"),
)

billing_overage_charges = Table(
    "billing_overage_charges",
    metadata,
    Column("tenant_id", String(40), primary_key=True),
    Column("period_start", UtcDateTime(), primary_key=True),
    Column("metric", String(64), primary_key=True),
    Column("subscription_id", String(40), nullable=False),
    Column("plan_id", String(32), nullable=False),
    Column("period_end", UtcDateTime(), nullable=False),
    Column("included", BigInteger, nullable=False),
    Column("used", BigInteger, nullable=False),
    Column("unit_price", String(32), nullable=False),  # decimal string, e.g. "0.001"
    Column("amount_minor", BigInteger, nullable=False),
    Column("provider_item_id", String(64), nullable=True),
    Column("invoice_id", String(40), nullable=True),  # the local invoice that billed it
    Column("create_time", UtcDateTime(), nullable=False),
)

billing_invoices = Table(
    "billing_invoices",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), nullable=False),
    Column("subscription_id", String(40), nullable=True),
    Column("number", String(64), nullable=True),
    Column("status", String(16), nullable=False),  # draft | open | paid | void | uncollectible
    Column("currency", String(3), nullable=False),
    Column("subtotal_minor", BigInteger, nullable=False),
    Column("total_minor", BigInteger, nullable=False),
    Column("amount_due_minor", BigInteger, nullable=False),
    Column("amount_paid_minor", BigInteger, nullable=False),
    Column("amount_remaining_minor", BigInteger, nullable=False),
    Column("lines", JSON, nullable=False),
    Column("period_start", UtcDateTime(), nullable=False),
    Column("period_end", UtcDateTime(), nullable=False),
    Column("due_time", UtcDateTime(), nullable=True),
    Column("paid_time", UtcDateTime(), nullable=True),
    Column("finalize_time", UtcDateTime(), nullable=True),
    Column("attempt_count", Integer, nullable=False),
    Column("next_attempt_time", UtcDateTime(), nullable=True),
    Column("hosted_url", String(2048), nullable=True),
    Column("pdf_url", String(2048), nullable=True),
    Column("provider_invoice_id", String(64), nullable=False),
    Column("create_time", UtcDateTime(), nullable=False),
    Column("update_time", UtcDateTime(), nullable=False),
    Index(None, "tenant_id", "create_time", "id"),
    Index(None, "provider_invoice_id", unique=True),
    Index(None, "finalize_time"),
)

billing_provider_events = Table(
    "billing_provider_events",
    metadata,
    Column("event_id", String(255), primary_key=True),
    Column("type", String(128), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("apply_time", UtcDateTime(), nullable=False),
)

billing_requests = Table(
    "billing_requests",
    metadata,
    Column("tenant_id", String(40), primary_key=True),
    Column("rpc", String(32), primary_key=True),
    Column("idempotency_key", String(255), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("response", JSON, nullable=False),
    Column("create_time", UtcDateTime(), nullable=False),
    Index(None, "create_time"),
)

billing_tenant_add_ons = Table(
    "billing_tenant_add_ons",
    metadata,
    Column("tenant_id", String(40), primary_key=True),
    Column("add_on_id", String(32), primary_key=True),
    Column("enabled", Boolean, nullable=False),
    Column("price_minor", BigInteger, nullable=True),  # a platform admin's override
    Column("update_time", UtcDateTime(), nullable=False),
)

# --- credits ------------------------------------------------------------------------------------
# A tenant's credit ledger: append-only transactions, and the balance kept beside them in the
# same transaction as each entry, so the balance is always the ledger's sum. The balance row's
# lock orders a tenant's ledger writes: each writer reads the balance it changes, so none can
# take credits another already took, and the balance never goes below zero.

credit_balances = Table(
    "credit_balances",
    metadata,
    Column("tenant_id", String(40), primary_key=True),
    Column("balance", BigInteger, nullable=False),
    Column("last_transaction_id", String(40), nullable=True),
    Column("low_balance_sent", Boolean, nullable=False),  # below the threshold, already told
    Column("update_time", UtcDateTime(), nullable=False),
)

credit_transactions = Table(
    "credit_transactions",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), nullable=False),
    Column("kind", String(16), nullable=False),  # purchase consume grant refund expire reserve release
    Column("amount", BigInteger, nullable=False),
    Column("balance_after", BigInteger, nullable=False),
    Column("idempotency_key", String(300), nullable=False),
    Column("fingerprint", String(64), nullable=False),  # of the request, for IDEMPOTENCY_KEY_REUSED
    Column("description", String(500), nullable=False),
    Column("metadata", JSON, nullable=True),
    Column("model_usage", JSON, nullable=True),  # provider, model, tokens and the rate it used
    Column("credit_package_id", String(32), nullable=True),
    Column("reservation_id", String(40), nullable=True),
    Column("actor", String(64), nullable=False),
    Column("create_time", UtcDateTime(), nullable=False),
    Index(None, "tenant_id", "idempotency_key", unique=True),
    Index(None, "tenant_id", "id"),
)

credit_reservations = Table(
    "credit_reservations",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("state", String(16), nullable=False),  # held | committed | released | expired
    Column("consumed", BigInteger, nullable=False),
    Column("idempotency_key", String(255), nullable=False),
    Column("expire_time", UtcDateTime(), nullable=False),
    Column("create_time", UtcDateTime(), nullable=False),
    Column("settle_time", UtcDateTime(), nullable=True),
    Column("balance_after", BigInteger, nullable=False),
    Index(None, "state", "expire_time"),
)

# A credit purchase from PurchaseCredits to the payment that completes it; its provider
# session (Stripe Checkout, Revolut order) is how a webhook finds it. The credits land as a
# PURCHASE transaction whose idempotency key is the session id: once, however often told.
credit_purchases = Table(
    "credit_purchases",
    metadata,
    Column("id", String(40), primary_key=True),  # cpu_…
    Column("tenant_id", String(40), nullable=False),
    Column("provider", String(16), nullable=False),  # local | stripe | revolut
    Column("session_id", String(255), nullable=False),
    Column("credit_package_id", String(32), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("credits", BigInteger, nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", String(16), nullable=False),  # open | paid
    Column("create_time", UtcDateTime(), nullable=False),
    Column("paid_time", UtcDateTime(), nullable=True),
    Index(None, "provider", "session_id", unique=True),
    Index(None, "paid_time"),
)
