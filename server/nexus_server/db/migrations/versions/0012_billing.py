"""Billing: accounts, subscriptions and their periods, overage charges, invoices, the
provider events applied, idempotent requests, tenants' add-ons.

Revision ID: 0012
Revises: 0011

(0008 was reserved for billing while it was unbuilt and is empty; installations have applied
it, so the tables arrive here.)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def _time(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "billing_accounts",
        sa.Column("tenant_id", sa.String(40), primary_key=True),
        sa.Column("subscription_id", sa.String(40), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=True),
        sa.Column("invoice_count", sa.Integer, nullable=False),
        _time("create_time"),
        _time("update_time"),
    )
    op.create_table(
        "billing_subscriptions",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("plan_id", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("seats", sa.Integer, nullable=False),
        _time("period_start"),
        _time("period_end"),
        _time("anchor"),
        sa.Column("interval", sa.String(8), nullable=False),
        sa.Column("cancel_at_period_end", sa.Boolean, nullable=False),
        _time("cancel_time", True),
        _time("end_time", True),
        _time("trial_end_time", True),
        _time("grace_end_time", True),
        _time("past_due_time", True),
        sa.Column("reminders_sent", sa.Integer, nullable=False),
        sa.Column("scheduled_plan_id", sa.String(32), nullable=True),
        sa.Column("scheduled_seats", sa.Integer, nullable=True),
        sa.Column("provider_subscription_id", sa.String(64), nullable=True),
        sa.Column("provider_status", sa.String(32), nullable=True),
        sa.Column("cancel_reason", sa.String(1000), nullable=True),
        _time("create_time"),
        _time("update_time"),
    )
    op.create_index(
        "ix_billing_subscriptions_tenant_id_create_time",
        "billing_subscriptions",
        ["tenant_id", "create_time"],
    )
    op.create_index(
        "ix_billing_subscriptions_provider_subscription_id",
        "billing_subscriptions",
        ["provider_subscription_id"],
        unique=True,
    )
    op.create_index("ix_billing_subscriptions_status", "billing_subscriptions", ["status"])
    op.create_table(
        "billing_periods",
        sa.Column("subscription_id", sa.String(40), primary_key=True),
        sa.Column("period_start", sa.DateTime(timezone=True), primary_key=True),
        _time("period_end"),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("plan_id", sa.String(32), nullable=False),
        sa.Column("closed", sa.Boolean, nullable=False),
    )
    op.create_index("ix_billing_periods_tenant_id_closed", "billing_periods", ["tenant_id", "closed"])
    op.create_table(
        "billing_overage_charges",
        sa.Column("tenant_id", sa.String(40), primary_key=True),
        sa.Column("period_start", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("metric", sa.String(64), primary_key=True),
        sa.Column("subscription_id", sa.String(40), nullable=False),
        sa.Column("plan_id", sa.String(32), nullable=False),
        _time("period_end"),
        sa.Column("included", sa.BigInteger, nullable=False),
        sa.Column("used", sa.BigInteger, nullable=False),
        sa.Column("unit_price", sa.String(32), nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("provider_item_id", sa.String(64), nullable=True),
        sa.Column("invoice_id", sa.String(40), nullable=True),
        _time("create_time"),
    )
    op.create_table(
        "billing_invoices",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("subscription_id", sa.String(40), nullable=True),
        sa.Column("number", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("subtotal_minor", sa.BigInteger, nullable=False),
        sa.Column("total_minor", sa.BigInteger, nullable=False),
        sa.Column("amount_due_minor", sa.BigInteger, nullable=False),
        sa.Column("amount_paid_minor", sa.BigInteger, nullable=False),
        sa.Column("amount_remaining_minor", sa.BigInteger, nullable=False),
        sa.Column("lines", sa.JSON, nullable=False),
        _time("period_start"),
        _time("period_end"),
        _time("due_time", True),
        _time("paid_time", True),
        _time("finalize_time", True),
        sa.Column("attempt_count", sa.Integer, nullable=False),
        _time("next_attempt_time", True),
        sa.Column("hosted_url", sa.String(2048), nullable=True),
        sa.Column("pdf_url", sa.String(2048), nullable=True),
        sa.Column("provider_invoice_id", sa.String(64), nullable=False),
        _time("create_time"),
        _time("update_time"),
    )
    op.create_index(
        "ix_billing_invoices_tenant_id_create_time_id", "billing_invoices", ["tenant_id", "create_time", "id"]
    )
    op.create_index(
        "ix_billing_invoices_provider_invoice_id", "billing_invoices", ["provider_invoice_id"], unique=True
    )
    op.create_index("ix_billing_invoices_finalize_time", "billing_invoices", ["finalize_time"])
    op.create_table(
        "billing_provider_events",
        sa.Column("event_id", sa.String(255), primary_key=True),
        sa.Column("type", sa.String(128), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        _time("apply_time"),
    )
    op.create_table(
        "billing_requests",
        sa.Column("tenant_id", sa.String(40), primary_key=True),
        sa.Column("rpc", sa.String(32), primary_key=True),
        sa.Column("idempotency_key", sa.String(255), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("response", sa.JSON, nullable=False),
        _time("create_time"),
    )
    op.create_index("ix_billing_requests_create_time", "billing_requests", ["create_time"])
    op.create_table(
        "billing_tenant_add_ons",
        sa.Column("tenant_id", sa.String(40), primary_key=True),
        sa.Column("add_on_id", sa.String(32), primary_key=True),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("price_minor", sa.BigInteger, nullable=True),
        _time("update_time"),
    )


def downgrade() -> None:
    for table in (
        "billing_tenant_add_ons",
        "billing_requests",
        "billing_provider_events",
        "billing_invoices",
        "billing_overage_charges",
        "billing_periods",
        "billing_subscriptions",
        "billing_accounts",
    ):
        op.drop_table(table)
