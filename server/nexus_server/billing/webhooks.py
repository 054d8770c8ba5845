"""Applying a verified Stripe event, once, whatever order the events come in.

Each event is claimed by its id (`billing_provider_events`) in the transaction that applies
it: a redelivery, even a concurrent one, finds the claim and is a DUPLICATE; an apply that
fails rolls its claim back with it, so Stripe's retry applies it then. The event's body is
never trusted for state: the subscription, invoice or checkout it names is re-read from
Stripe under the tenant's account lock and mirrored as it stands now, so an old event
arriving after a newer one re-applies the newer state (and changes nothing: STALE).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from nexus_server.billing import dunning, invoices, purchases, rules, selling, store, subscriptions
from nexus_server.billing.ports import Deps
from nexus_server.billing.provider import PaymentProvider, ProviderRejected, ProviderSubscription
from nexus_server.common.errors import NotFound
from nexus_server.db.uow import UnitOfWork

APPLIED, DUPLICATE, STALE, IGNORED = "applied", "duplicate", "stale", "ignored"
SUBSCRIPTION_EVENTS = (
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.paused",
    "customer.subscription.resumed",
)
INVOICE_EVENTS = ("invoice.finalized", "invoice.paid", "invoice.payment_failed", "invoice.voided")
CHECKOUT_EVENTS = ("checkout.session.completed", "checkout.session.async_payment_succeeded")


@dataclass(frozen=True)
class Outcome:
    event_id: str
    event_type: str
    outcome: str


async def apply_event(uow: UnitOfWork, deps: Deps, event: dict[str, Any]) -> Outcome:
    assert deps.provider is not None
    event_id, event_type = event["id"], event["type"]
    if not await store.claim_event(uow.session, event_id, event_type, uow.clock.now()):
        return Outcome(event_id, event_type, DUPLICATE)
    obj: dict[str, Any] = event["data"]["object"]
    try:
        outcome = await _apply(uow, deps, deps.provider, event_type, obj)
    except NotFound:
        outcome = IGNORED  # a tenant deleted since
    except ProviderRejected as error:
        if error.code != "resource_missing":
            raise
        outcome = IGNORED  # Stripe knows no such object (another account's, or deleted): nothing to mirror
    await store.set_event_outcome(uow.session, event_id, outcome)
    return Outcome(event_id, event_type, outcome)


async def _apply(
    uow: UnitOfWork, deps: Deps, provider: PaymentProvider, kind: str, obj: dict[str, Any]
) -> str:
    if kind in SUBSCRIPTION_EVENTS:
        sub = await provider.get_subscription(_id(obj))
        changed = await mirror_subscription(uow, deps, sub)
        return _verdict(changed)
    if kind in INVOICE_EVENTS:
        return await _invoice(uow, deps, provider, _id(obj))
    if kind in CHECKOUT_EVENTS:
        checkout = await provider.get_checkout(_id(obj))
        if checkout.mode == "payment":
            settled = await purchases.settle(uow, deps, "stripe", checkout)
            return {purchases.CREDITED: APPLIED, purchases.UNKNOWN: IGNORED}.get(settled, STALE)
        if checkout.mode != "subscription" or not checkout.subscription_id:
            return IGNORED
        sub = await provider.get_subscription(checkout.subscription_id)
        if "tenant_id" not in sub.metadata and checkout.metadata.get("tenant_id"):
            sub = replace(sub, metadata={**sub.metadata, **checkout.metadata})
        changed = await mirror_subscription(uow, deps, sub)
        return _verdict(changed)
    return IGNORED


def _id(obj: dict[str, Any]) -> str:
    value = obj.get("id")
    if not isinstance(value, str) or not value:
        raise NotFound("the event names no object")
    return value


def _verdict(changed: bool | None) -> str:
    """APPLIED when the event moved Nexus's state; STALE when Nexus already held what Stripe
    holds now (a redelivery under a new id, or an older event after a newer one)."""
    if changed is None:
        return IGNORED
    return APPLIED if changed else STALE


async def _tenant_of(uow: UnitOfWork, metadata: dict[str, str] | Any, customer_id: str) -> str:
    tenant_id = str(metadata.get("tenant_id", "")) if metadata else ""
    if tenant_id:
        return tenant_id
    acct = await store.account_by_customer(uow.session, customer_id) if customer_id else None
    return acct.tenant_id if acct is not None else ""


async def mirror_subscription(uow: UnitOfWork, deps: Deps, sub: ProviderSubscription) -> bool | None:
    """Make Nexus's copy of `sub` what Stripe holds now; None if no tenant of ours owns it."""
    tenant_id = await _tenant_of(uow, sub.metadata, sub.customer_id)
    if not tenant_id:
        return None
    acct = await subscriptions.account(uow, deps, tenant_id, lock=True)
    row = await store.subscription_by_provider_id(uow.session, sub.id)
    state = selling.state_from_provider(deps, sub, row)
    if row is None:
        if state.status == rules.CANCELED:
            return False
        row = await subscriptions.start_paid(uow, deps, acct, state, sub.customer_id)
        changed = True
    else:
        row, changed = await subscriptions.apply(uow, deps, row, state)
    if acct.customer_id != sub.customer_id and acct.subscription_id == row.id:
        await store.update_account(uow.session, tenant_id, {"customer_id": sub.customer_id})
    if changed:
        await dunning.remind_if_due(uow, deps, row, uow.clock.now())
    return changed


async def _invoice(uow: UnitOfWork, deps: Deps, provider: PaymentProvider, invoice_id: str) -> str:
    """Mirror the invoice and the subscription it bills (first, so that an invoice event
    arriving before the subscription's names the subscription it belongs to)."""
    invoice = await provider.get_invoice(invoice_id)
    sub = await provider.get_subscription(invoice.subscription_id) if invoice.subscription_id else None
    tenant_id = await _tenant_of(uow, sub.metadata if sub else invoice.metadata, invoice.customer_id)
    if not tenant_id:
        return IGNORED
    await subscriptions.account(uow, deps, tenant_id, lock=True)
    changed = bool(await mirror_subscription(uow, deps, sub)) if sub is not None else False
    ours = await store.subscription_by_provider_id(uow.session, sub.id) if sub else None
    row, before = await invoices.mirror(uow, deps, tenant_id, ours.id if ours else None, invoice)
    changed = (
        changed
        or before is None
        or (before.status, before.attempt_count, before.amount_remaining_minor)
        != (
            row.status,
            row.attempt_count,
            row.amount_remaining_minor,
        )
    )
    if row.status == "paid" and (before is None or before.status != "paid"):
        await uow.append_event("invoice.paid", invoices.event_body(row), tenant_id=tenant_id, subject=row.id)
    failed_attempt = row.attempt_count > (before.attempt_count if before is not None else 0)
    if row.status == "open" and failed_attempt:
        await uow.append_event(
            "invoice.payment_failed", invoices.event_body(row), tenant_id=tenant_id, subject=row.id
        )
    if ours is not None and row.status == "paid":
        # The subscription may have come back to ACTIVE before this invoice was mirrored.
        changed = await dunning.reactivate_if_paid(uow, deps, ours, uow.clock.now()) or changed
    return APPLIED if changed else STALE
