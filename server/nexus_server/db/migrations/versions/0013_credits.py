"""Credits: balances, the append-only ledger, reservations, purchases.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def _time(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "credit_balances",
        sa.Column("tenant_id", sa.String(40), primary_key=True),
        sa.Column("balance", sa.BigInteger, nullable=False),
        sa.Column("last_transaction_id", sa.String(40), nullable=True),
        sa.Column("low_balance_sent", sa.Boolean, nullable=False),
        _time("update_time"),
    )
    op.create_table(
        "credit_transactions",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("balance_after", sa.BigInteger, nullable=False),
        sa.Column("idempotency_key", sa.String(300), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("description", sa.String(500), nullable=False),
        sa.Column("metadata", sa.JSON, nullable=True),
        sa.Column("model_usage", sa.JSON, nullable=True),
        sa.Column("credit_package_id", sa.String(32), nullable=True),
        sa.Column("reservation_id", sa.String(40), nullable=True),
        sa.Column("actor", sa.String(64), nullable=False),
        _time("create_time"),
    )
    op.create_index(
        "ix_credit_transactions_tenant_id_idempotency_key",
        "credit_transactions",
        ["tenant_id", "idempotency_key"],
        unique=True,
    )
    op.create_index("ix_credit_transactions_tenant_id_id", "credit_transactions", ["tenant_id", "id"])
    op.create_table(
        "credit_reservations",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("consumed", sa.BigInteger, nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        _time("expire_time"),
        _time("create_time"),
        _time("settle_time", True),
        sa.Column("balance_after", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_credit_reservations_state_expire_time", "credit_reservations", ["state", "expire_time"])
    op.create_table(
        "credit_purchases",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("provider", sa.String(16), nullable=False),
        sa.Column("session_id", sa.String(255), nullable=False),
        sa.Column("credit_package_id", sa.String(32), nullable=False),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.Column("credits", sa.BigInteger, nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        _time("create_time"),
        _time("paid_time", True),
    )
    op.create_index(
        "ix_credit_purchases_provider_session_id", "credit_purchases", ["provider", "session_id"], unique=True
    )
    op.create_index("ix_credit_purchases_paid_time", "credit_purchases", ["paid_time"])


def downgrade() -> None:
    for table in ("credit_purchases", "credit_reservations", "credit_transactions", "credit_balances"):
        op.drop_table(table)
