"""The catalog as the payment provider's prices: what `nexus billing sync` keeps in step.

Each price is found by its lookup key, so a sync is idempotent and a price change makes a
new price that takes the key over (Stripe prices are immutable): `nexus_plan_<plan>` for a
plan's base price, `nexus_seat_<plan>` for its extra seats, `nexus_addon_<add-on>` for an
application. The free plan has no price: Stripe never bills it.
"""

from __future__ import annotations

from nexus_server.billing.catalog import Catalog
from nexus_server.billing.provider import PriceRef


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
                    f"nexus_seat_{plan.id}",
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
