"""Add-ons: the ecosystem's applications sold monthly on top of a paid plan, each at the
catalog's price or at a price a platform admin set for one tenant.

A tenant's add-ons live in `billing_tenant_add_ons`; the local provider's invoices read them
(invoices.period_lines). Under Stripe each enabled add-on is an item of the tenant's Stripe
subscription, changed without proration (the next invoice charges it, as seats are). A
tenant's own price is a Stripe price of its own, found by the lookup key
`nexus_addon_<add-on>_<tenant>` and made (or replaced) by SetTenantAddOnPrice, so every
item still names a price by lookup key and a re-sync stays idempotent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from nexus_server.billing import rules, selling, store, subscriptions, sync
from nexus_server.billing.catalog import AddOn
from nexus_server.billing.ports import Deps
from nexus_server.billing.provider import PriceRef, ProviderError
from nexus_server.common.errors import FailedPrecondition, NotFound
from nexus_server.db.uow import UnitOfWork

MAX_PRICE_MINOR = 100_000_000  # 1,000,000.00 in the main unit


@dataclass(frozen=True)
class TenantAddOn:
    tenant_id: str
    add_on: AddOn
    enabled: bool
    price_minor: int
    overridden: bool
    update_time: datetime | None


def _view(deps: Deps, tenant_id: str, add_on: AddOn, row: store.AddOnRow | None) -> TenantAddOn:
    overridden = row is not None and row.price_minor is not None
    price = row.price_minor if row is not None and row.price_minor is not None else add_on.price_minor
    return TenantAddOn(
        tenant_id, add_on, bool(row and row.enabled), price, overridden, row.update_time if row else None
    )


async def of_tenant(uow: UnitOfWork, deps: Deps, tenant_id: str) -> list[TenantAddOn]:
    await subscriptions.account(uow, deps, tenant_id)
    rows = {r.add_on_id: r for r in await store.add_ons_of(uow.session, tenant_id)}
    return [_view(deps, tenant_id, a, rows.get(a.id)) for a in deps.catalog.add_ons]


def _offered(deps: Deps, add_on_id: str) -> AddOn:
    add_on = deps.catalog.add_on(add_on_id)
    if add_on is None:
        raise NotFound(f"add-on {add_on_id!r} does not exist")
    return add_on


async def _row(uow: UnitOfWork, tenant_id: str, add_on_id: str) -> store.AddOnRow | None:
    return next((r for r in await store.add_ons_of(uow.session, tenant_id) if r.add_on_id == add_on_id), None)


async def set_enabled(
    uow: UnitOfWork, deps: Deps, tenant_id: str, add_on_id: str, enabled: bool
) -> TenantAddOn:
    add_on = _offered(deps, add_on_id)
    await subscriptions.account(uow, deps, tenant_id, lock=True)
    row = await _row(uow, tenant_id, add_on_id)
    if bool(row and row.enabled) == enabled:
        return _view(deps, tenant_id, add_on, row)
    current = await subscriptions.current(uow, deps, tenant_id)
    if enabled:
        if current.plan_id == deps.catalog.free.id:
            raise FailedPrecondition(
                f"tenant {tenant_id} is on the free plan: subscribe to a paid plan to add applications",
                reason="PAYMENT_METHOD_REQUIRED",
            )
        if current.status not in rules.CHANGEABLE:
            raise FailedPrecondition(
                f"the subscription is {current.status}",
                reason="SUBSCRIPTION_NOT_ACTIVE",
                metadata={"status": current.status.upper()},
            )
    now = uow.clock.now()
    await store.put_add_on(
        uow.session,
        {
            "tenant_id": tenant_id,
            "add_on_id": add_on_id,
            "enabled": enabled,
            "price_minor": row.price_minor if row else None,
            "update_time": now,
        },
    )
    await _push(uow, deps, current, f"addon:{add_on_id}:{'on' if enabled else 'off'}:{now.isoformat()}")
    fresh = await _row(uow, tenant_id, add_on_id)
    await uow.append_event(
        "subscription.add_on_enabled" if enabled else "subscription.add_on_disabled",
        {"tenant_id": tenant_id, "add_on_id": add_on_id, "subscription_id": current.id},
        tenant_id=tenant_id,
        subject=current.id,
    )
    return _view(deps, tenant_id, add_on, fresh)


async def set_price(
    uow: UnitOfWork, deps: Deps, tenant_id: str, add_on_id: str, price_minor: int | None
) -> TenantAddOn:
    add_on = _offered(deps, add_on_id)
    await subscriptions.account(uow, deps, tenant_id, lock=True)
    row = await _row(uow, tenant_id, add_on_id)
    if (row.price_minor if row else None) == price_minor:
        return _view(deps, tenant_id, add_on, row)
    if deps.provider is not None and price_minor is not None:
        try:
            await deps.provider.sync_catalog(
                [
                    PriceRef(
                        sync.add_on_key(add_on_id, tenant_id),
                        f"{add_on.display_name} add-on ({tenant_id})",
                        price_minor,
                        deps.catalog.currency,
                        "month",
                    )
                ]
            )
        except ProviderError as error:
            raise selling.provider_failure(error) from error
    now = uow.clock.now()
    await store.put_add_on(
        uow.session,
        {
            "tenant_id": tenant_id,
            "add_on_id": add_on_id,
            "enabled": bool(row and row.enabled),
            "price_minor": price_minor,
            "update_time": now,
        },
    )
    if row is not None and row.enabled:
        current = await subscriptions.current(uow, deps, tenant_id)
        await _push(uow, deps, current, f"addon:{add_on_id}:price:{price_minor}:{now.isoformat()}")
    return _view(deps, tenant_id, add_on, await _row(uow, tenant_id, add_on_id))


async def _push(uow: UnitOfWork, deps: Deps, row: store.SubscriptionRow, key: str) -> None:
    """Make the Stripe subscription's items match (no proration); nothing to do locally."""
    if deps.provider is None or not row.provider_subscription_id:
        return
    plan = deps.catalog.plan(row.plan_id)
    if plan is None:
        return
    try:
        mirrored = await deps.provider.update_items(
            row.provider_subscription_id,
            await selling.subscription_items(uow, deps, row.tenant_id, plan, row.seats),
            prorate=False,
            idempotency_key=f"{key}:{row.id}",
        )
    except ProviderError as error:
        raise selling.provider_failure(error) from error
    await subscriptions.apply(uow, deps, row, selling.state_from_provider(deps, mirrored, row))


def monthly_minor(views: list[TenantAddOn]) -> int:
    return sum(v.price_minor for v in views if v.enabled)
