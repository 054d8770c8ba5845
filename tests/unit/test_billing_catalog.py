"""The plan catalog: the built-in default is the seeds', the shipped example file says the
same, and a bad file stops the server with a message naming the entry and the field."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from nexus_server.billing import catalog
from nexus_server.config import ConfigError, load_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "plans.example.toml"


def test_the_default_catalog_is_the_seeds() -> None:
    plans = {p.id: p for p in catalog.DEFAULT.plans}
    assert [p.id for p in catalog.DEFAULT.plans] == ["free", "pro", "business", "enterprise"]
    calls = plans["pro"].quota("api_calls")
    assert calls is not None and calls.overage_unit_price == Decimal("0.001")
    assert plans["pro"].seat_price_minor == 1000  # $10 per user per month
    free_calls = plans["free"].quota("api_calls")
    assert free_calls is not None and free_calls.overage_unit_price is None  # a hard limit
    assert not plans["enterprise"].self_serve


def test_the_example_file_describes_the_default_catalog() -> None:
    assert catalog.load(EXAMPLE) == catalog.DEFAULT


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "plans.toml"
    path.write_text(text)
    return path


FREE = '[[plans]]\nid = "free"\nprice = "0"\n'


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('[[plans]]\nid = "pro"\nprice = "29.00"\n', "id = 'free'"),
        (FREE + '[[plans]]\nid = "pro"\nprice = 29.5\n', "plans[pro].price"),
        (FREE + '[[plans]]\nid = "pro"\nprice = "29.001"\n', "whole cents"),
        (FREE + '[[plans]]\nid = "Pro!"\nprice = "1"\n', "plans[1].id"),
        (FREE + '[[plans]]\nid = "pro"\nprice = "1"\ncolour = "red"\n', "unknown key 'colour'"),
        (FREE + '[[plans]]\nid = "pro"\nprice = "1"\n[plans.quotas.api_calls]\nincluded = -1\n', "included"),
        (FREE + FREE, "appears twice"),
        ('[[plans]]\nid = "free"\nprice = "5"\n', "must cost nothing"),
        ("plans = [", "not valid TOML"),
    ],
)
def test_a_bad_catalog_is_refused_naming_what_is_wrong(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        catalog.load(_file(tmp_path, text))
    assert named in str(caught.value)
    assert "NEXUS_PLANS_FILE" in str(caught.value)


def test_quotas_say_how_they_are_enforced(tmp_path: Path) -> None:
    text = (
        FREE
        + '[[plans]]\nid = "pro"\nprice = "10"\n'
        + '[plans.quotas.api_calls]\nincluded = 5\noverage_unit_price = "0.002"\n'
        + "[plans.quotas.ai_tokens]\nunlimited = true\n"
        + "[plans.quotas.emails]\nincluded = 3\n"
    )
    pro = catalog.load(_file(tmp_path, text)).plan("pro")
    assert pro is not None
    by_metric: dict[str, Any] = {q.metric: q for q in pro.quotas}
    assert by_metric["api_calls"].overage_unit_price == Decimal("0.002")
    assert by_metric["ai_tokens"].unlimited
    assert by_metric["emails"].overage_unit_price is None and not by_metric["emails"].unlimited


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"NEXUS_PLANS_FILE": "/no/such/plans.toml"}, "NEXUS_PLANS_FILE"),
        ({"NEXUS_STRIPE_API_KEY": "pk_live_x"}, "NEXUS_STRIPE_API_KEY"),
        ({"NEXUS_STRIPE_WEBHOOK_SECRET": "secret"}, "NEXUS_STRIPE_WEBHOOK_SECRET"),
        ({"NEXUS_STRIPE_API_BASE": "ftp://x"}, "NEXUS_STRIPE_API_BASE"),
        ({"NEXUS_DUNNING_GRACE_DAYS": "-1"}, "NEXUS_DUNNING_GRACE_DAYS"),
        ({"NEXUS_BILLING_CYCLE_SECONDS": "soon"}, "NEXUS_BILLING_CYCLE_SECONDS"),
    ],
)
def test_billing_settings_are_checked_at_start(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert named in str(caught.value)


def test_billing_settings_are_read() -> None:
    settings = load_settings(
        {
            "NEXUS_STRIPE_API_KEY": "sk_test_1",
            "NEXUS_STRIPE_WEBHOOK_SECRET": "whsec_new, whsec_old",
            "NEXUS_DUNNING_GRACE_DAYS": "3",
        }
    )
    assert settings.stripe_api_key == "sk_test_1"
    assert settings.stripe_webhook_secrets == ("whsec_new", "whsec_old")
    assert settings.dunning_grace.days == 3


def test_credits_settings_name_the_provider_and_need_its_key() -> None:
    assert load_settings({}).credits_provider == "local"
    assert load_settings({"NEXUS_STRIPE_API_KEY": "sk_test_1"}).credits_provider == "stripe"
    revolut = load_settings({"NEXUS_CREDITS_PROVIDER": "revolut", "NEXUS_REVOLUT_API_KEY": "sk_r"})
    assert (revolut.credits_provider, revolut.revolut_api_key) == ("revolut", "sk_r")
    for env, named in (
        ({"NEXUS_CREDITS_PROVIDER": "paypal"}, "NEXUS_CREDITS_PROVIDER"),
        ({"NEXUS_CREDITS_PROVIDER": "revolut"}, "NEXUS_REVOLUT_API_KEY"),
        ({"NEXUS_CREDITS_PROVIDER": "stripe"}, "NEXUS_STRIPE_API_KEY"),
    ):
        with pytest.raises(ConfigError) as caught:
            load_settings(env)
        assert named in str(caught.value)


def test_the_default_credit_catalog_is_the_seeds() -> None:
    assert [(p.id, p.credits, p.price_minor) for p in catalog.DEFAULT.credit_packages] == [
        ("starter", 10_000, 500),
        ("pro", 50_000, 2000),
        ("enterprise", 500_000, 15000),
    ]
    rate = catalog.DEFAULT.credit_rate("openai", "gpt-4o")
    assert rate is not None and (rate.input_per_million, rate.output_per_million) == (2500, 10000)
