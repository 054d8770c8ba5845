"""The catalog Nexus sells: plans, add-ons, credit packages and the credit rate table, from
`NEXUS_PLANS_FILE` (TOML) or the built-in default below (the seeds' plans, the ecosystem's
applications, the AI-chat seed's credit packages; the rates are per million tokens).

It is read and checked once, at start: a bad file stops the server with a message naming
the entry and the field (`ConfigError`), never a half-loaded catalog. Prices are written as
decimal strings ("29.00", "0.001") because TOML floats are binary fractions and money must be
exact; a float is refused with that hint. Whole prices are kept in minor units (cents); unit
prices of usage may be finer than a cent and are kept as `Decimal`.

A quota is enforced one of three ways, read off the entry: `unlimited = true`; an
`overage_unit_price` bills usage past `included` at the end of the period; neither makes
`included` a hard limit (calls past it are refused, see usage/hard_limits.py).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from nexus_server.config import ConfigError

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
METRIC = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
CURRENCY = re.compile(r"^[A-Z]{3}$")
INTERVALS = ("month", "year")
FREE_PLAN = "free"


@dataclass(frozen=True)
class PlanQuota:
    metric: str
    included: int = 0
    unlimited: bool = False
    overage_unit_price: Decimal | None = None  # None: a hard limit (unless unlimited)


@dataclass(frozen=True)
class Plan:
    id: str
    display_name: str
    price_minor: int
    interval: str = "month"
    description: str = ""
    quotas: tuple[PlanQuota, ...] = ()
    rate_limit_per_minute: int = 100  # each API key's default
    tenant_rate_limit_per_minute: int = 12_000  # the tenant-wide ceiling (ratelimit/policies.py)
    seat_price_minor: int | None = None
    included_seats: int = 0
    trial_days: int = 0
    self_serve: bool = False
    features: tuple[str, ...] = ()
    monthly_credits: int = 0  # granted once per billing period by the cycle

    @property
    def is_free(self) -> bool:
        return self.id == FREE_PLAN

    @property
    def per_seat(self) -> bool:
        return self.seat_price_minor is not None

    def quota(self, metric: str) -> PlanQuota | None:
        return next((q for q in self.quotas if q.metric == metric), None)

    def monthly_minor(self, seats: int) -> int:
        """Base price plus extra seats, per month (a yearly plan counts one twelfth, rounded
        down to the cent: MRR is a reading, not a charge)."""
        total = self.price_minor + (self.seat_price_minor or 0) * max(seats - self.included_seats, 0)
        return total // 12 if self.interval == "year" else total


@dataclass(frozen=True)
class AddOn:
    """An ecosystem application sold as a monthly add-on (the seeds' application catalog)."""

    id: str
    display_name: str
    price_minor: int
    description: str = ""


@dataclass(frozen=True)
class CreditPackage:
    id: str
    display_name: str
    credits: int
    price_minor: int
    description: str = ""


@dataclass(frozen=True)
class CreditRate:
    """Credits per million tokens: integers, so a call's price is exact before the one
    rounding up to a whole credit (rules.credits_for)."""

    provider: str
    model: str
    input_per_million: int
    output_per_million: int


@dataclass(frozen=True)
class Catalog:
    currency: str
    plans: tuple[Plan, ...]  # by price, lowest first
    add_ons: tuple[AddOn, ...] = ()
    credit_packages: tuple[CreditPackage, ...] = ()  # fewest credits first
    credit_rates: tuple[CreditRate, ...] = ()  # by provider, then model
    low_balance_threshold: int = 1000  # credits.low_balance fires when a balance falls below it
    _by_id: Mapping[str, Plan] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_id", {p.id: p for p in self.plans})

    def plan(self, plan_id: str) -> Plan | None:
        return self._by_id.get(plan_id)

    @property
    def free(self) -> Plan:
        return self._by_id[FREE_PLAN]

    def add_on(self, add_on_id: str) -> AddOn | None:
        return next((a for a in self.add_ons if a.id == add_on_id), None)

    def credit_package(self, package_id: str) -> CreditPackage | None:
        return next((p for p in self.credit_packages if p.id == package_id), None)

    def credit_rate(self, provider: str, model: str) -> CreditRate | None:
        return next((r for r in self.credit_rates if (r.provider, r.model) == (provider, model)), None)

    def tenant_rate_limit(self, plan_id: str) -> int | None:
        """The plan's tenant-wide limit: the rate limiter's `plan_limit` port."""
        plan = self._by_id.get(plan_id)
        return plan.tenant_rate_limit_per_minute if plan is not None else None


_CALL = Decimal("0.001")  # USD per API call over quota (the seeds)
_TOKEN = Decimal("0.000002")  # USD per AI token over quota


def _q(metric: str, included: int, overage: Decimal | None = None) -> PlanQuota:
    return PlanQuota(metric, included, overage_unit_price=overage)


DEFAULT = Catalog(
    currency="USD",
    plans=(
        Plan(
            "free",
            "Free",
            0,
            description="For trying Nexus out and for small side projects.",
            quotas=(_q("ai_tokens", 100_000), _q("api_calls", 10_000)),
            rate_limit_per_minute=60,
            tenant_rate_limit_per_minute=12_000,
            features=("10,000 API calls a month", "Community support"),
        ),
        Plan(
            "pro",
            "Pro",
            2900,
            description="For teams shipping a product on the ecosystem.",
            quotas=(_q("ai_tokens", 5_000_000, _TOKEN), _q("api_calls", 1_000_000, _CALL)),
            rate_limit_per_minute=600,
            tenant_rate_limit_per_minute=60_000,
            seat_price_minor=1000,
            included_seats=1,
            trial_days=14,
            self_serve=True,
            features=("1,000,000 API calls a month", "$0.001 per call over", "Email support"),
            monthly_credits=5_000,
        ),
        Plan(
            "business",
            "Business",
            9900,
            description="For companies running several products with many people.",
            quotas=(_q("ai_tokens", 50_000_000, _TOKEN), _q("api_calls", 10_000_000, _CALL)),
            rate_limit_per_minute=3000,
            tenant_rate_limit_per_minute=300_000,
            seat_price_minor=1000,
            included_seats=5,
            trial_days=14,
            self_serve=True,
            features=("10,000,000 API calls a month", "SSO", "Custom domains", "Priority support"),
            monthly_credits=25_000,
        ),
        Plan(
            "enterprise",
            "Enterprise",
            49900,
            description="Sold by contract: unlimited usage, custom terms.",
            quotas=(
                PlanQuota("ai_tokens", unlimited=True),
                PlanQuota("api_calls", unlimited=True),
            ),
            rate_limit_per_minute=10_000,
            tenant_rate_limit_per_minute=1_200_000,
            seat_price_minor=1000,
            included_seats=25,
            features=("Unlimited API calls", "SSO", "Dedicated support", "Contract terms"),
            monthly_credits=100_000,
        ),
    ),
    credit_packages=(
        CreditPackage("starter", "Starter", 10_000, 500, "10,000 credits"),
        CreditPackage("pro", "Pro", 50_000, 2000, "50,000 credits"),
        CreditPackage("enterprise", "Enterprise", 500_000, 15000, "500,000 credits"),
    ),
    credit_rates=(
        CreditRate("anthropic", "claude-3-5-haiku", 800, 4000),
        CreditRate("anthropic", "claude-3-5-sonnet", 3000, 15000),
        CreditRate("google", "gemini-1.5-flash", 75, 300),
        CreditRate("google", "gemini-1.5-pro", 1250, 5000),
        CreditRate("openai", "gpt-4o", 2500, 10000),
        CreditRate("openai", "gpt-4o-mini", 150, 600),
    ),
    add_ons=(
        AddOn("nexus-sales", "Nexus Sales (CRM)", 1500),
        AddOn("dream-people", "Dream People", 1000),
        AddOn("testing-hub", "Testing Hub", 1000),
        AddOn("liminal", "Liminal (AI chat)", 2000),
        AddOn("resonance", "Resonance", 1000),
        AddOn("agi-safety", "AGI Safety research", 1000),
        AddOn("liminal-shelter", "Liminal Shelter", 500),
    ),
)


def load(path: Path | None) -> Catalog:
    """The catalog in `path`, or the built-in default; ConfigError naming what is wrong."""
    if path is None:
        return DEFAULT
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"NEXUS_PLANS_FILE={path}: cannot read it ({exc.strerror})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"NEXUS_PLANS_FILE={path}: not valid TOML ({exc})") from exc
    try:
        return parse(data)
    except ValueError as exc:
        raise ConfigError(f"NEXUS_PLANS_FILE={path}: {exc}") from exc


def parse(data: Mapping[str, Any]) -> Catalog:
    """A catalog from parsed TOML; ValueError naming the entry and field."""
    _only(data, {"currency", "plans", "add_ons", "credit_packages", "credit_rates", "credits"}, "the file")
    currency = data.get("currency", "USD")
    if not isinstance(currency, str) or not CURRENCY.match(currency):
        raise ValueError(f"currency={currency!r} must be an ISO 4217 code in capitals, e.g. USD")
    raw_plans = data.get("plans")
    if not isinstance(raw_plans, list) or not raw_plans:
        raise ValueError("needs at least one [[plans]] entry, among them one with id = 'free'")
    plans = [_plan(entry, i) for i, entry in enumerate(raw_plans)]
    _unique([p.id for p in plans], "plans")
    free = next((p for p in plans if p.is_free), None)
    if free is None:
        raise ValueError("needs a plan with id = 'free': every tenant starts on it")
    if free.price_minor != 0 or free.per_seat or free.self_serve or free.trial_days:
        raise ValueError("plans[free] must cost nothing, have no seat price or trial, and not be self_serve")
    raw_add_ons = data.get("add_ons", [])
    if not isinstance(raw_add_ons, list):
        raise ValueError("add_ons must be a list of [[add_ons]] tables")
    add_ons = [_add_on(entry, i) for i, entry in enumerate(raw_add_ons)]
    _unique([a.id for a in add_ons], "add_ons")
    packages = [_package(entry, i) for i, entry in enumerate(_tables(data, "credit_packages"))]
    _unique([p.id for p in packages], "credit_packages")
    rates = [_rate(entry, i) for i, entry in enumerate(_tables(data, "credit_rates"))]
    _unique([f"{r.provider}/{r.model}" for r in rates], "credit_rates")
    credits = data.get("credits", {})
    if not isinstance(credits, dict):
        raise ValueError("[credits] must be a table")
    _only(credits, {"low_balance_threshold"}, "[credits]")
    threshold = _count(credits.get("low_balance_threshold", 1000), "credits.low_balance_threshold", 0, 10**12)
    plans.sort(key=lambda p: (p.price_minor, p.id))
    packages.sort(key=lambda p: (p.credits, p.id))
    rates.sort(key=lambda r: (r.provider, r.model))
    return Catalog(currency, tuple(plans), tuple(add_ons), tuple(packages), tuple(rates), threshold)


def _tables(data: Mapping[str, Any], key: str) -> list[Any]:
    entries = data.get(key, [])
    if not isinstance(entries, list):
        raise ValueError(f"{key} must be a list of [[{key}]] tables")
    return entries


def _package(entry: Any, index: int) -> CreditPackage:
    where = f"credit_packages[{index}]"
    if not isinstance(entry, dict):
        raise ValueError(f"{where} must be a table")
    package_id = _slug(entry.get("id"), f"{where}.id")
    where = f"credit_packages[{package_id}]"
    _only(entry, {"id", "display_name", "description", "credits", "price"}, where)
    return CreditPackage(
        package_id,
        _text(entry.get("display_name", package_id.title()), f"{where}.display_name", 64),
        _count(entry.get("credits"), f"{where}.credits", 1, 10**12),
        _minor(entry.get("price"), f"{where}.price"),
        _text(entry.get("description", ""), f"{where}.description", 500, empty=True),
    )


PROVIDER = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def _rate(entry: Any, index: int) -> CreditRate:
    where = f"credit_rates[{index}]"
    if not isinstance(entry, dict):
        raise ValueError(f"{where} must be a table")
    _only(
        entry,
        {"provider", "model", "input_credits_per_million_tokens", "output_credits_per_million_tokens"},
        where,
    )
    provider, model = entry.get("provider"), entry.get("model")
    if not isinstance(provider, str) or not PROVIDER.match(provider):
        raise ValueError(f"{where}.provider={provider!r} must be lowercase, 1 to 64 characters")
    if not isinstance(model, str) or not 0 < len(model) <= 128 or not model.isprintable():
        raise ValueError(f"{where}.model must be 1 to 128 printable characters")
    where = f"credit_rates[{provider}/{model}]"
    return CreditRate(
        provider,
        model,
        _count(entry.get("input_credits_per_million_tokens"), f"{where}.input_credits_per_million_tokens", 0),
        _count(
            entry.get("output_credits_per_million_tokens"), f"{where}.output_credits_per_million_tokens", 0
        ),
    )


_PLAN_KEYS = {
    "monthly_credits",
    "id",
    "display_name",
    "description",
    "price",
    "interval",
    "quotas",
    "rate_limit_per_minute",
    "tenant_rate_limit_per_minute",
    "seat_price",
    "included_seats",
    "trial_days",
    "self_serve",
    "features",
}


def _plan(entry: Any, index: int) -> Plan:
    where = f"plans[{index}]"
    if not isinstance(entry, dict):
        raise ValueError(f"{where} must be a table")
    plan_id = _slug(entry.get("id"), f"{where}.id")
    where = f"plans[{plan_id}]"
    _only(entry, _PLAN_KEYS, where)
    interval = entry.get("interval", "month")
    if interval not in INTERVALS:
        raise ValueError(f"{where}.interval={interval!r} must be one of {', '.join(INTERVALS)}")
    quotas_raw = entry.get("quotas", {})
    if not isinstance(quotas_raw, dict):
        raise ValueError(f"{where}.quotas must be a table of [plans.quotas.<metric>] tables")
    quotas = tuple(_quota(metric, q, f"{where}.quotas.{metric}") for metric, q in sorted(quotas_raw.items()))
    seat = entry.get("seat_price")
    features = entry.get("features", [])
    if (
        not isinstance(features, list)
        or len(features) > 20
        or not all(isinstance(f, str) and 0 < len(f) <= 200 for f in features)
    ):
        raise ValueError(f"{where}.features must be at most 20 strings of 1 to 200 characters")
    return Plan(
        id=plan_id,
        display_name=_text(entry.get("display_name", plan_id.title()), f"{where}.display_name", 64),
        description=_text(entry.get("description", ""), f"{where}.description", 500, empty=True),
        price_minor=_minor(entry.get("price"), f"{where}.price"),
        interval=interval,
        quotas=quotas,
        rate_limit_per_minute=_count(
            entry.get("rate_limit_per_minute", 100), f"{where}.rate_limit_per_minute", 1
        ),
        tenant_rate_limit_per_minute=_count(
            entry.get("tenant_rate_limit_per_minute", 12_000), f"{where}.tenant_rate_limit_per_minute", 1
        ),
        seat_price_minor=None if seat is None else _minor(seat, f"{where}.seat_price"),
        included_seats=_count(entry.get("included_seats", 0), f"{where}.included_seats", 0, 10_000),
        trial_days=_count(entry.get("trial_days", 0), f"{where}.trial_days", 0, 730),
        self_serve=_bool(entry.get("self_serve", False), f"{where}.self_serve"),
        features=tuple(features),
        monthly_credits=_count(entry.get("monthly_credits", 0), f"{where}.monthly_credits", 0, 10**12),
    )


def _quota(metric: str, entry: Any, where: str) -> PlanQuota:
    if not METRIC.match(metric):
        raise ValueError(f"{where}: a metric is lowercase snake_case, at most 64 characters")
    if not isinstance(entry, dict):
        raise ValueError(f"{where} must be a table with `included` and optional `overage_unit_price`")
    _only(entry, {"included", "unlimited", "overage_unit_price"}, where)
    unlimited = _bool(entry.get("unlimited", False), f"{where}.unlimited")
    price = entry.get("overage_unit_price")
    if unlimited and (price is not None or "included" in entry):
        raise ValueError(f"{where}: an unlimited quota has no `included` or `overage_unit_price`")
    return PlanQuota(
        metric,
        included=0 if unlimited else _count(entry.get("included"), f"{where}.included", 0, 10**15),
        unlimited=unlimited,
        overage_unit_price=None if price is None else _decimal(price, f"{where}.overage_unit_price"),
    )


def _add_on(entry: Any, index: int) -> AddOn:
    where = f"add_ons[{index}]"
    if not isinstance(entry, dict):
        raise ValueError(f"{where} must be a table")
    add_on_id = _slug(entry.get("id"), f"{where}.id")
    where = f"add_ons[{add_on_id}]"
    _only(entry, {"id", "display_name", "description", "price"}, where)
    return AddOn(
        add_on_id,
        _text(entry.get("display_name", add_on_id), f"{where}.display_name", 64),
        _minor(entry.get("price"), f"{where}.price"),
        _text(entry.get("description", ""), f"{where}.description", 500, empty=True),
    )


def _only(entry: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")


def _unique(ids: Sequence[str], what: str) -> None:
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise ValueError(f"{what}: id {i!r} appears twice")
        seen.add(i)


def _slug(value: Any, where: str) -> str:
    if not isinstance(value, str) or not SLUG.match(value):
        raise ValueError(f"{where}={value!r} must be a lowercase slug of 1 to 32 characters (a-z, 0-9, -)")
    return value


def _text(value: Any, where: str, limit: int, *, empty: bool = False) -> str:
    if not isinstance(value, str) or len(value) > limit or (not empty and not value.strip()):
        raise ValueError(f"{where} must be text of {'0' if empty else '1'} to {limit} characters")
    return value


def _count(value: Any, where: str, lo: int, hi: int = 10**9) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{where}={value!r} must be a whole number from {lo} to {hi}")
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{where}={value!r} must be true or false")
    return value


def _decimal(value: Any, where: str) -> Decimal:
    if isinstance(value, float):
        raise ValueError(f'{where}={value!r}: write money as a string, e.g. "0.001" (floats are inexact)')
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f'{where} must be a decimal string such as "29.00"')
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise ValueError(f"{where}={value!r} is not a decimal number") from exc
    if not amount.is_finite() or amount < 0 or amount > 10**9 or amount.as_tuple().exponent < -9:  # type: ignore[operator]
        raise ValueError(f"{where}={value!r} must be from 0 to 1,000,000,000 with at most 9 decimals")
    return amount


def _minor(value: Any, where: str) -> int:
    if value is None:
        raise ValueError(f'{where} is required, e.g. "29.00"')
    amount = _decimal(value, where)
    cents = amount * 100
    if cents != cents.to_integral_value():
        raise ValueError(f"{where}={value!r}: a price is charged in whole cents")
    return int(cents)
