"""The identity capability's tables.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("password_hash", sa.String(100), nullable=False),
        sa.Column("display_name", sa.String(100), nullable=False),
        sa.Column("email_verified", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("platform_admin", sa.Boolean(), nullable=False),
        sa.Column("totp_secret", sa.LargeBinary(), nullable=True),
        sa.Column("totp_pending_secret", sa.LargeBinary(), nullable=True),
        sa.Column("totp_pending_expire_time", _TIME, nullable=True),
        sa.Column("totp_last_step", sa.Integer(), nullable=True),
        sa.Column("create_time", _TIME, nullable=False),
        sa.Column("update_time", _TIME, nullable=False),
        sa.Column("last_login_time", _TIME, nullable=True),
        sa.Column("disable_time", _TIME, nullable=True),
        sa.Column("disable_reason", sa.String(500), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("email", name="uq_users_email"),
    )
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("user_id", sa.String(40), nullable=False),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("user_agent", sa.String(512), nullable=False),
        sa.Column("ip_address", sa.String(64), nullable=False),
        sa.Column("create_time", _TIME, nullable=False),
        sa.Column("last_seen_time", _TIME, nullable=False),
        sa.Column("expire_time", _TIME, nullable=False),
        sa.Column("end_time", _TIME, nullable=True),
        sa.Column("end_reason", sa.String(32), nullable=True),
        sa.Column("refresh_hash", sa.String(64), nullable=False),
        sa.Column("previous_refresh_hash", sa.String(64), nullable=True),
        sa.Column("rotate_time", _TIME, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_sessions"),
    )
    op.create_index("ix_sessions_user_id_end_time", "sessions", ["user_id", "end_time"])
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(64), nullable=False),
        sa.Column("alg", sa.String(16), nullable=False),
        sa.Column("public_jwk", sa.JSON(), nullable=False),
        sa.Column("private_key", sa.LargeBinary(), nullable=False),
        sa.Column("create_time", _TIME, nullable=False),
        sa.Column("activate_time", _TIME, nullable=False),
        sa.Column("retire_time", _TIME, nullable=True),
        sa.Column("expire_time", _TIME, nullable=True),
        sa.PrimaryKeyConstraint("kid", name="pk_signing_keys"),
    )
    op.create_table(
        "one_time_tokens",
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(40), nullable=False),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("create_time", _TIME, nullable=False),
        sa.Column("expire_time", _TIME, nullable=False),
        sa.Column("used_time", _TIME, nullable=True),
        sa.PrimaryKeyConstraint("token_hash", name="pk_one_time_tokens"),
    )
    op.create_index("ix_one_time_tokens_user_id_purpose", "one_time_tokens", ["user_id", "purpose"])
    op.create_table(
        "recovery_codes",
        sa.Column("user_id", sa.String(40), nullable=False),
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("used_time", _TIME, nullable=True),
        sa.PrimaryKeyConstraint("user_id", "code_hash", name="pk_recovery_codes"),
    )
    op.create_table(
        "login_attempts",
        sa.Column("key", sa.String(300), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failure_time", _TIME, nullable=False),
        sa.Column("next_attempt_time", _TIME, nullable=False),
        sa.Column("locked_until", _TIME, nullable=True),
        sa.PrimaryKeyConstraint("key", name="pk_login_attempts"),
    )
    op.create_table(
        "known_devices",
        sa.Column("user_id", sa.String(40), nullable=False),
        sa.Column("device_hash", sa.String(64), nullable=False),
        sa.Column("first_seen_time", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("user_id", "device_hash", name="pk_known_devices"),
    )
    op.create_table(
        "mail_outbox",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("recipient", sa.String(254), nullable=False),
        sa.Column("message", sa.LargeBinary(), nullable=False),
        sa.Column("create_time", _TIME, nullable=False),
        sa.Column("next_attempt_time", _TIME, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("sent_time", _TIME, nullable=True),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_mail_outbox"),
    )
    op.create_index(
        "ix_mail_outbox_sent_time_next_attempt_time", "mail_outbox", ["sent_time", "next_attempt_time"]
    )


def downgrade() -> None:
    for table in (
        "mail_outbox",
        "known_devices",
        "login_attempts",
        "recovery_codes",
        "one_time_tokens",
        "signing_keys",
        "sessions",
        "users",
    ):
        op.drop_table(table)
