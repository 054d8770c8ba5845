"""The catalog as the payment provider's prices: what `nexus billing sync` keeps in step.

Each price is found by its lookup key, so a sync is idempotent and a price change makes a
new price that takes the key over (Stripe prices are immutable): `nexus_plan_<plan>` for a
plan's base price, `nexus_seat_<plan>` for its extra seats, `nexus_addon_<add-on>` for an
application. The free plan has no price: Stripe never bills it.
"""

from __future__ import annotations

from nexus_server.billing.catalog import Catalog
from nexus_server.billing.provider import PriceRef


def plan_key(plan_id: str) -> str:
    return f"nexus_plan_{plan_id}"


def seat_key(plan_id: str) -> str:
    return f"nexus_seat_{plan_id}"


def add_on_key(add_on_id: str, tenant_id: str = "") -> str:
    """The catalog's price, or with `tenant_id` the price a platform admin set for one tenant."""
    return f"nexus_addon_{add_on_id}_{tenant_id}" if tenant_id else f"nexus_addon_{add_on_id}"


def prices_of(catalog: Catalog) -> list[PriceRef]:
    prices: list[PriceRef] = []
    for plan in catalog.plans:
        if plan.is_free:
            continue
        prices.append(
            PriceRef(
                f"nexus_plan_{plan.id}",
                f"{plan.display_name} plan",
                plan.price_minor,
                catalog.currency,
                plan.interval,
            )
        )
        if plan.seat_price_minor is not None:
            prices.append(
                PriceRef(
                    seat_key(plan.id),
                    f"{plan.display_name} extra seat",
                    plan.seat_price_minor,
                    catalog.currency,
                    plan.interval,
                )
            )
    for add_on in catalog.add_ons:
        prices.append(
            PriceRef(
                f"nexus_addon_{add_on.id}",
                f"{add_on.display_name} add-on",
                add_on.price_minor,
                catalog.currency,
                "month",
            )
        )
    return prices
