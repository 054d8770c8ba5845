"""The identity capability's tables: accounts, sessions (with their refresh-token chain),
signing keys, emailed one-time tokens, TOTP recovery codes, sign-in failure counters and
the mail outbox.

Nothing secret is kept in plaintext: passwords are bcrypt hashes; refresh tokens, one-time
tokens and recovery codes are SHA-256 digests; signing keys' private parts, TOTP secrets and
queued mail bodies (which carry links with tokens) are sealed with AES-GCM (sealing.py).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    Table,
)

from nexus_server.db.schema import metadata
from nexus_server.db.types import UtcDateTime

users = Table(
    "users",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("email", String(254), nullable=False, unique=True),  # trimmed, lower-cased
    Column("password_hash", String(100), nullable=False),
    Column("display_name", String(100), nullable=False),
    Column("email_verified", Boolean, nullable=False),
    Column("status", String(16), nullable=False),  # active | disabled
    Column("platform_admin", Boolean, nullable=False),
    Column("totp_secret", LargeBinary, nullable=True),  # sealed; set once confirmed
    Column("totp_pending_secret", LargeBinary, nullable=True),  # sealed; between enroll and confirm
    Column("totp_pending_expire_time", UtcDateTime(), nullable=True),
    Column("totp_last_step", Integer, nullable=True),  # last accepted 30 s step: no code replays
    Column("create_time", UtcDateTime(), nullable=False),
    Column("update_time", UtcDateTime(), nullable=False),
    Column("last_login_time", UtcDateTime(), nullable=True),
    Column("disable_time", UtcDateTime(), nullable=True),
    Column("disable_reason", String(500), nullable=False),
)

sessions = Table(
    "sessions",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("user_id", String(40), nullable=False),
    Column("tenant_id", String(40), nullable=False),  # active tenant ('' for none)
    Column("user_agent", String(512), nullable=False),
    Column("ip_address", String(64), nullable=False),
    Column("create_time", UtcDateTime(), nullable=False),
    Column("last_seen_time", UtcDateTime(), nullable=False),
    Column("expire_time", UtcDateTime(), nullable=False),  # the current refresh token's expiry
    Column("end_time", UtcDateTime(), nullable=True),
    Column("end_reason", String(32), nullable=True),
    # The refresh-token chain (refresh_tokens.py): SHA-256 hex of the current token, and of
    # its immediate predecessor, spent at `rotate_time` (the retry grace window). Every
    # older token is recognised by its tag, so no row per token is kept.
    Column("refresh_hash", String(64), nullable=False),
    Column("previous_refresh_hash", String(64), nullable=True),
    Column("rotate_time", UtcDateTime(), nullable=True),
    Index(None, "user_id", "end_time"),
)

signing_keys = Table(
    "signing_keys",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("alg", String(16), nullable=False),
    Column("public_jwk", JSON, nullable=False),
    Column("private_key", LargeBinary, nullable=False),  # sealed PKCS#8 DER
    Column("create_time", UtcDateTime(), nullable=False),  # published in the JWKS from here
    Column("activate_time", UtcDateTime(), nullable=False),  # signs from here
    Column("retire_time", UtcDateTime(), nullable=True),  # stopped signing
    Column("expire_time", UtcDateTime(), nullable=True),  # unpublished from here
)

# Single-use emailed tokens (email verification, password reset), stored as SHA-256.
one_time_tokens = Table(
    "one_time_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("user_id", String(40), nullable=False),
    Column("purpose", String(16), nullable=False),  # verify_email | reset_password
    Column("email", String(254), nullable=False),
    Column("create_time", UtcDateTime(), nullable=False),
    Column("expire_time", UtcDateTime(), nullable=False),
    Column("used_time", UtcDateTime(), nullable=True),  # spent, or replaced by a newer token
    Index(None, "user_id", "purpose"),
)

recovery_codes = Table(
    "recovery_codes",
    metadata,
    Column("user_id", String(40), nullable=False),
    Column("code_hash", String(64), nullable=False),
    Column("used_time", UtcDateTime(), nullable=True),
    PrimaryKeyConstraint("user_id", "code_hash"),
)

# Failed sign-ins per `email:<address>` and `ip:<address>`, shared by every replica.
login_attempts = Table(
    "login_attempts",
    metadata,
    Column("key", String(300), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("last_failure_time", UtcDateTime(), nullable=False),
    Column("next_attempt_time", UtcDateTime(), nullable=False),
    Column("locked_until", UtcDateTime(), nullable=True),
)

# Devices a user has signed in from (SHA-256 of user agent and address): a new one gets a notice.
known_devices = Table(
    "known_devices",
    metadata,
    Column("user_id", String(40), nullable=False),
    Column("device_hash", String(64), nullable=False),
    Column("first_seen_time", UtcDateTime(), nullable=False),
    PrimaryKeyConstraint("user_id", "device_hash"),
)

# The notifications outbox: committed with the change that queues the mail, sent after.
mail_outbox = Table(
    "mail_outbox",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("recipient", String(254), nullable=False),
    Column("message", LargeBinary, nullable=False),  # sealed RFC 5322 bytes
    Column("create_time", UtcDateTime(), nullable=False),
    Column("next_attempt_time", UtcDateTime(), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("sent_time", UtcDateTime(), nullable=True),
    Column("last_error", String(500), nullable=True),
    Index(None, "sent_time", "next_attempt_time"),
)

# Password-reset requests, answered by a background task: the request itself does the same
# work (one insert) whether or not the email has an account, so its timing tells nothing.
reset_requests = Table(
    "reset_requests",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("email", String(254), nullable=False),
    Column("create_time", UtcDateTime(), nullable=False),
    Index(None, "create_time"),
)
