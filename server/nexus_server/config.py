"""Settings from NEXUS_* environment variables, checked once at start with clear messages."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlparse

from nexus_server.common.addresses import DEFAULT_TRUSTED, parse_networks

ROOT = Path(__file__).resolve().parents[2]
# The key every checkout shares: anyone can unseal what it sealed (the signing keys, so forge
# any token). `nexus serve` refuses it unless NEXUS_ALLOW_DEV_SECRET_KEY=1 says this is a
# development run; `nexus dev` (`make run`) allows it and says so loudly in the log.
DEV_SECRET_KEY = "dev-insecure-secret-key-change-me"


class ConfigError(Exception):
    """A NEXUS_* setting is missing or malformed; the message names it and what is allowed."""


@dataclass(frozen=True)
class Settings:
    # Storage: the embedded SQLite file under ./var/ unless NEXUS_DATABASE_URL names PostgreSQL.
    database_url: str = f"sqlite+aiosqlite:///{ROOT / 'var' / 'nexus.db'}"
    redis_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 50051
    metrics_port: int | None = 9464  # Prometheus exposition; None disables it
    # Whether the gRPC port is bound with SO_REUSEPORT: set in each of `nexus serve --workers
    # N`'s processes, which share one port (the kernel spreads connections over them).
    # Otherwise off, so a second server started on a taken port fails loudly.
    reuse_port: bool = False
    envoy_port: int = 8080
    envoy_admin_port: int = 9901
    # Proxies of our own in front of Envoy (a cloud load balancer that appends to
    # X-Forwarded-For). 0: the caller is Envoy's TCP peer and any X-Forwarded-For a client
    # sends is ignored; N: Envoy believes the Nth-from-last entry. Set it higher than the real
    # number of hops and clients choose their own address again.
    envoy_xff_trusted_hops: int = 0
    log_level: str = "INFO"
    # How long a graceful stop waits for in-flight unary calls before cancelling them.
    shutdown_grace: timedelta = timedelta(seconds=10)
    access_token_ttl: timedelta = timedelta(minutes=15)
    refresh_token_ttl: timedelta = timedelta(days=7)
    issuer: str = "http://127.0.0.1:8080"
    audience: str = "nexus"
    # Seals signing keys' private parts, TOTP secrets and queued mail at rest (identity/
    # sealing.py); required outside development. `secret_key_previous` (the key before a
    # rotation) only opens what the old key sealed, and start-up re-seals it with the new one.
    secret_key: str = DEV_SECRET_KEY
    secret_key_previous: str | None = None
    # NEXUS_ALLOW_DEV_SECRET_KEY=1: a development run may use DEV_SECRET_KEY (see above).
    allow_dev_secret_key: bool = False
    var_dir: Path = field(default_factory=lambda: ROOT / "var")
    # Events: each subscriber's buffer of live events (count and approximate bytes) before
    # it falls back to reading the log, and how often each replica re-reads the log heads
    # in case a wake-up (commit, NOTIFY) was missed.
    events_buffer_events: int = 1024
    events_buffer_bytes: int = 1024 * 1024
    events_poll_interval: timedelta = timedelta(seconds=1)
    # Usage: metering of every authenticated call as `api_calls` (NEXUS_USAGE_METERING=0 turns
    # it off), flushed at least this often; raw records kept this long (at least the 7 days
    # idempotency keys are promised for), their rollups for good.
    usage_metering: bool = True
    usage_flush_interval: timedelta = timedelta(seconds=1)
    usage_retention: timedelta = timedelta(days=35)
    # Identity: bcrypt cost (tests lower it), how long JWKS readers may cache the key set
    # (a new signing key is published this long before it signs), outgoing mail.
    bcrypt_rounds: int = 12
    jwks_cache_ttl: timedelta = timedelta(minutes=5)
    smtp_url: str | None = None  # smtp://user:pass@host:port; None writes .eml under var_dir/mail
    mail_from: str = "Nexus <no-reply@nexus.localhost>"
    public_url: str = "http://127.0.0.1:8080"  # base of links in emails
    # Name servers (`ip` or `ip:port`) for custom-domain TXT proofs; empty: the system's.
    dns_nameservers: tuple[str, ...] = ()
    # Peers whose `x-forwarded-for` names the caller (Envoy): networks, comma-separated;
    # `none` believes no one. Other callers are known by their own address.
    trusted_proxies: str = DEFAULT_TRUSTED
    # Register calls one client address may make in 15 minutes (each hashes a password).
    signups_per_address: int = 30
    # Tenants: the ecosystem's project catalog, `key[=Display Name],…`; empty means the
    # built-in seven (tenants/projects.py).
    projects: str = ""
    # Rate limits: what to do when Redis (NEXUS_REDIS_URL) is unreachable -- `local` (the
    # default: each replica keeps limiting with its own in-process counters), `open` (admit
    # unlimited) or `closed` (refuse with RESOURCE_EXHAUSTED); each person's calls per minute.
    ratelimit_on_redis_down: str = "local"
    ratelimit_user_per_minute: int = 1200
    # The server's event loop: `uvloop` (the default: libuv's loop takes about a quarter off
    # grpc.aio's per-message cost, measured in bench/) or `asyncio` (the standard library's).
    event_loop: str = "uvloop"
    # Billing: the plan catalog (TOML; None: the built-in one), Stripe (no key: the local
    # payment provider, whose checkouts complete at once), the webhook signing secrets
    # (comma-separated while one is rolled), the API's address (tests point it at a double),
    # the grace period of dunning, hosts besides public_url's that checkout may send people
    # back to, and how often each replica tries to run the billing cycle (0: never; runs are
    # serialised across replicas).
    plans_file: Path | None = None
    stripe_api_key: str | None = None
    stripe_webhook_secrets: tuple[str, ...] = ()
    stripe_api_base: str | None = None
    dunning_grace: timedelta = timedelta(days=7)
    billing_redirect_hosts: tuple[str, ...] = ()
    billing_cycle_interval: timedelta = timedelta(hours=1)
    # Credits: who takes payment for credit packages (`local`, `stripe`, `revolut`; unset:
    # Stripe when its key is set, else local), and Revolut Merchant's key, webhook signing
    # secrets (comma-separated while rolling) and API address (tests point it at a double).
    credits_provider: str = "local"
    revolut_api_key: str | None = None
    revolut_webhook_secrets: tuple[str, ...] = ()
    revolut_api_base: str = "https://merchant.revolut.com"
    # Outbound webhooks: whether endpoints may be plain http or private/loopback addresses
    # (`nexus dev` allows it so a developer can point one at a local receiver; `nexus serve`
    # does not), how long an attempt may take, how long a replica's lease on an endpoint
    # lasts (a replica that dies leaves its endpoints to others after this), how many
    # endpoints one replica sends to at once, and how often it looks for work that other
    # replicas' commits created.
    webhooks_allow_private_urls: bool = False
    webhooks_timeout: timedelta = timedelta(seconds=15)
    webhooks_lease: timedelta = timedelta(seconds=60)
    webhooks_concurrency: int = 128
    webhooks_poll_interval: timedelta = timedelta(seconds=1)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def uses_dev_secret_key(self) -> bool:
        return self.secret_key == DEV_SECRET_KEY


def check_secret_key(settings: Settings) -> None:
    """Refuse the built-in development key unless NEXUS_ALLOW_DEV_SECRET_KEY=1 allows it."""
    if settings.uses_dev_secret_key and not settings.allow_dev_secret_key:
        raise ConfigError(
            "NEXUS_SECRET_KEY is not set, so the built-in development key would seal the signing "
            "keys, and anyone with this source could forge tokens. Set NEXUS_SECRET_KEY to a "
            "generated key (python -c 'import secrets; print(secrets.token_urlsafe(32))'; see "
            "docs/operations.md), or NEXUS_ALLOW_DEV_SECRET_KEY=1 for a development run"
        )


def _int(env: Mapping[str, str], name: str, default: int | None, lo: int, hi: int) -> int | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number (expected {lo}..{hi})") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name}={value} is out of range (expected {lo}..{hi})")
    return value


def _seconds(env: Mapping[str, str], name: str, default: timedelta) -> timedelta:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number of seconds") from None
    if value < 0:
        raise ConfigError(f"{name}={raw!r} must not be negative")
    return timedelta(seconds=value)


def _url(env: Mapping[str, str], name: str, schemes: tuple[str, ...], default: str | None) -> str | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    scheme = urlparse(raw).scheme
    if scheme not in schemes:
        raise ConfigError(
            f"{name} must start with one of {', '.join(s + '://' for s in schemes)}; got {scheme!r}"
        )
    return raw


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise ConfigError(f"{name}={raw!r} must be 1 or 0")


def _choice(env: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str) -> str:
    raw = env.get(name, "").strip().lower() or default
    if raw not in allowed:
        raise ConfigError(f"{name}={raw!r} must be one of {', '.join(allowed)}")
    return raw


def _proxies(env: Mapping[str, str], default: str) -> str:
    raw = env.get("NEXUS_TRUSTED_PROXIES", default)
    try:
        parse_networks(raw)
    except ValueError as error:
        raise ConfigError(
            f"NEXUS_TRUSTED_PROXIES: {error} (expected networks such as 10.0.0.0/8,::1)"
        ) from None
    return raw


def _projects(env: Mapping[str, str]) -> str:
    raw = env.get("NEXUS_PROJECTS", "")
    if raw.strip():
        from nexus_server.common.projects import parse_catalog

        try:
            parse_catalog(raw)
        except ValueError as error:
            raise ConfigError(f"NEXUS_PROJECTS: {error} (expected key[=Display Name],…)") from None
    return raw


def _events_poll(env: Mapping[str, str], default: timedelta) -> timedelta:
    value = _seconds(env, "NEXUS_EVENTS_POLL_SECONDS", default)
    if value.total_seconds() < 0.01:
        raise ConfigError("NEXUS_EVENTS_POLL_SECONDS must be at least 0.01")
    return value


def _usage_flush(env: Mapping[str, str], default: timedelta) -> timedelta:
    value = _seconds(env, "NEXUS_USAGE_FLUSH_SECONDS", default)
    if not 0.01 <= value.total_seconds() <= 1:
        raise ConfigError("NEXUS_USAGE_FLUSH_SECONDS must be from 0.01 to 1")
    return value


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every NEXUS_* setting; raise ConfigError naming the first bad one."""
    env = os.environ if env is None else env
    base = Settings()
    var_dir = Path(env.get("NEXUS_VAR_DIR") or base.var_dir)
    db = _url(
        env,
        "NEXUS_DATABASE_URL",
        ("sqlite+aiosqlite", "postgresql+psycopg", "postgresql"),
        f"sqlite+aiosqlite:///{var_dir / 'nexus.db'}",
    )
    assert db is not None
    if db.startswith("postgresql://"):
        db = "postgresql+psycopg://" + db.removeprefix("postgresql://")
    level = env.get("NEXUS_LOG_LEVEL", base.log_level).upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"NEXUS_LOG_LEVEL={level!r} must be one of DEBUG, INFO, WARNING, ERROR")
    metrics_off = env.get("NEXUS_METRICS_PORT", "").lower() == "off"
    metrics_port = None if metrics_off else _int(env, "NEXUS_METRICS_PORT", base.metrics_port, 0, 65535)
    secret = env.get("NEXUS_SECRET_KEY") or base.secret_key
    if len(secret) < 16:
        raise ConfigError("NEXUS_SECRET_KEY must be at least 16 characters")
    previous = env.get("NEXUS_SECRET_KEY_PREVIOUS") or None
    if previous is not None and len(previous) < 16:
        raise ConfigError("NEXUS_SECRET_KEY_PREVIOUS must be at least 16 characters")
    allow_dev = _flag(env, "NEXUS_ALLOW_DEV_SECRET_KEY")
    settings = Settings(
        database_url=db,
        redis_url=_url(env, "NEXUS_REDIS_URL", ("redis", "rediss", "unix"), None),
        host=env.get("NEXUS_HOST", base.host),
        port=_int(env, "NEXUS_PORT", base.port, 0, 65535) or 0,
        metrics_port=metrics_port,
        reuse_port=_flag(env, "NEXUS_REUSE_PORT"),
        envoy_port=_int(env, "NEXUS_ENVOY_PORT", base.envoy_port, 1, 65535) or base.envoy_port,
        envoy_admin_port=_int(env, "NEXUS_ENVOY_ADMIN_PORT", base.envoy_admin_port, 1, 65535)
        or base.envoy_admin_port,
        envoy_xff_trusted_hops=_int(env, "NEXUS_ENVOY_XFF_TRUSTED_HOPS", base.envoy_xff_trusted_hops, 0, 10)
        or 0,
        log_level=level,
        shutdown_grace=_seconds(env, "NEXUS_SHUTDOWN_GRACE_SECONDS", base.shutdown_grace),
        access_token_ttl=_seconds(env, "NEXUS_ACCESS_TOKEN_TTL_SECONDS", base.access_token_ttl),
        refresh_token_ttl=_seconds(env, "NEXUS_REFRESH_TOKEN_TTL_SECONDS", base.refresh_token_ttl),
        issuer=env.get("NEXUS_ISSUER", base.issuer),
        audience=env.get("NEXUS_AUDIENCE", base.audience),
        secret_key=secret,
        secret_key_previous=previous if previous != secret else None,
        allow_dev_secret_key=allow_dev,
        var_dir=var_dir,
        events_buffer_events=_int(env, "NEXUS_EVENTS_BUFFER_EVENTS", base.events_buffer_events, 1, 1_000_000)
        or base.events_buffer_events,
        events_buffer_bytes=_int(
            env, "NEXUS_EVENTS_BUFFER_BYTES", base.events_buffer_bytes, 65_536, 1024 * 1024 * 1024
        )
        or base.events_buffer_bytes,
        events_poll_interval=_events_poll(env, base.events_poll_interval),
        usage_metering=env.get("NEXUS_USAGE_METERING", "1").strip().lower()
        not in ("0", "false", "off", "no"),
        usage_flush_interval=_usage_flush(env, base.usage_flush_interval),
        usage_retention=timedelta(days=_int(env, "NEXUS_USAGE_RETENTION_DAYS", 35, 7, 3650) or 35),
        bcrypt_rounds=_int(env, "NEXUS_BCRYPT_ROUNDS", base.bcrypt_rounds, 4, 31) or base.bcrypt_rounds,
        jwks_cache_ttl=_seconds(env, "NEXUS_JWKS_CACHE_SECONDS", base.jwks_cache_ttl),
        smtp_url=_url(env, "NEXUS_SMTP_URL", ("smtp", "smtps"), None),
        mail_from=env.get("NEXUS_MAIL_FROM", base.mail_from),
        public_url=env.get("NEXUS_PUBLIC_URL", base.public_url).rstrip("/"),
        dns_nameservers=_names(env.get("NEXUS_DNS_NAMESERVERS", ",".join(base.dns_nameservers))),
        trusted_proxies=_proxies(env, base.trusted_proxies),
        signups_per_address=_int(env, "NEXUS_SIGNUPS_PER_ADDRESS", base.signups_per_address, 1, 10_000_000)
        or base.signups_per_address,
        projects=_projects(env),
        ratelimit_on_redis_down=_choice(
            env, "NEXUS_RATELIMIT_ON_REDIS_DOWN", ("local", "open", "closed"), base.ratelimit_on_redis_down
        ),
        event_loop=_choice(env, "NEXUS_EVENT_LOOP", ("uvloop", "asyncio"), base.event_loop),
        ratelimit_user_per_minute=_int(
            env, "NEXUS_RATELIMIT_USER_PER_MINUTE", base.ratelimit_user_per_minute, 1, 10_000_000
        )
        or base.ratelimit_user_per_minute,
    )
    return _webhooks(env, _billing(env, settings))


def _webhooks(env: Mapping[str, str], settings: Settings) -> Settings:
    timeout = _int(env, "NEXUS_WEBHOOKS_TIMEOUT_SECONDS", 15, 1, 60) or 15
    lease = _int(env, "NEXUS_WEBHOOKS_LEASE_SECONDS", 60, 2, 3600) or 60
    if lease <= timeout:
        # A lease that can run out during one attempt would let a second replica send too.
        raise ConfigError(
            f"NEXUS_WEBHOOKS_LEASE_SECONDS={lease} must be longer than "
            f"NEXUS_WEBHOOKS_TIMEOUT_SECONDS={timeout}"
        )
    poll = _int(env, "NEXUS_WEBHOOKS_POLL_MILLISECONDS", 1000, 10, 60_000) or 1000
    return replace(
        settings,
        webhooks_allow_private_urls=_flag(env, "NEXUS_WEBHOOKS_ALLOW_PRIVATE_URLS"),
        webhooks_timeout=timedelta(seconds=timeout),
        webhooks_lease=timedelta(seconds=lease),
        webhooks_concurrency=_int(env, "NEXUS_WEBHOOKS_CONCURRENCY", 128, 1, 10_000) or 128,
        webhooks_poll_interval=timedelta(milliseconds=poll),
    )


def _billing(env: Mapping[str, str], settings: Settings) -> Settings:
    plans = env.get("NEXUS_PLANS_FILE", "").strip()
    if plans and not Path(plans).is_file():
        raise ConfigError(f"NEXUS_PLANS_FILE={plans} is not a readable file")
    key = env.get("NEXUS_STRIPE_API_KEY", "").strip() or None
    if key is not None and not key.startswith(("sk_", "rk_")):
        raise ConfigError("NEXUS_STRIPE_API_KEY must be a Stripe secret or restricted key (sk_… or rk_…)")
    secrets = _names(env.get("NEXUS_STRIPE_WEBHOOK_SECRET", ""))
    if any(not s.startswith("whsec_") for s in secrets):
        raise ConfigError(
            "NEXUS_STRIPE_WEBHOOK_SECRET must be Stripe signing secrets (whsec_…), comma-separated"
        )
    grace = _int(env, "NEXUS_DUNNING_GRACE_DAYS", 7, 0, 90)
    cycle = _int(env, "NEXUS_BILLING_CYCLE_SECONDS", 3600, 0, 7 * 86400)
    provider = env.get("NEXUS_CREDITS_PROVIDER", "").strip() or ("stripe" if key else "local")
    if provider not in ("local", "stripe", "revolut"):
        raise ConfigError(f"NEXUS_CREDITS_PROVIDER={provider!r} must be one of local, stripe, revolut")
    revolut_key = env.get("NEXUS_REVOLUT_API_KEY", "").strip() or None
    if provider == "stripe" and key is None:
        raise ConfigError("NEXUS_CREDITS_PROVIDER=stripe needs NEXUS_STRIPE_API_KEY")
    if provider == "revolut" and revolut_key is None:
        raise ConfigError("NEXUS_CREDITS_PROVIDER=revolut needs NEXUS_REVOLUT_API_KEY")
    revolut_base = _url(env, "NEXUS_REVOLUT_API_BASE", ("https", "http"), settings.revolut_api_base)
    assert revolut_base is not None
    return replace(
        settings,
        credits_provider=provider,
        revolut_api_key=revolut_key,
        revolut_webhook_secrets=_names(env.get("NEXUS_REVOLUT_WEBHOOK_SECRET", "")),
        revolut_api_base=revolut_base.rstrip("/"),
        plans_file=Path(plans) if plans else None,
        stripe_api_key=key,
        stripe_webhook_secrets=secrets,
        stripe_api_base=_url(env, "NEXUS_STRIPE_API_BASE", ("https", "http"), None),
        dunning_grace=timedelta(days=grace if grace is not None else 7),
        billing_redirect_hosts=tuple(h.lower() for h in _names(env.get("NEXUS_BILLING_REDIRECT_HOSTS", ""))),
        billing_cycle_interval=timedelta(seconds=cycle if cycle is not None else 3600),
    )


def _names(value: str) -> tuple[str, ...]:
    """A comma-separated list, blanks dropped."""
    return tuple(n.strip() for n in value.split(",") if n.strip())
