"""Invoices: mirrored from the provider's, or issued by Nexus under the local provider.

A local invoice bills one period of one subscription: the plan's price, seats beyond those
included, each enabled add-on (at the tenant's price where a platform admin set one), and
the overage the cycle charged for the period before. It is paid when issued: the local
provider has no card to decline. Its provider id is `local_<subscription>_<period start>`,
unique, so issuing the same period twice makes one invoice.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from nexus_server.billing import rules, store
from nexus_server.billing.catalog import Plan
from nexus_server.billing.ports import Deps
from nexus_server.billing.provider import ProviderInvoice
from nexus_server.common.ids import new_id
from nexus_server.db.uow import UnitOfWork

SUBSCRIPTION, SEATS, OVERAGE, PRORATION, CREDITS, OTHER = (
    "subscription",
    "seats",
    "overage",
    "proration",
    "credits",
    "other",
)


def line(
    kind: str,
    description: str,
    quantity: int,
    unit_price: Decimal,
    start: datetime,
    end: datetime,
    *,
    plan_id: str = "",
    metric: str = "",
    amount_minor: int | None = None,
) -> dict[str, Any]:
    return {
        "kind": kind,
        "description": description[:500],
        "plan_id": plan_id,
        "metric": metric,
        "quantity": quantity,
        "unit_price": str(unit_price),
        "amount_minor": rules.round_minor(unit_price * quantity) if amount_minor is None else amount_minor,
        "period_start": start.isoformat(),
        "period_end": end.isoformat(),
    }


def _span(start: datetime, end: datetime) -> str:
    return f"{start:%d %b %Y} – {end:%d %b %Y}"


async def period_lines(
    uow: UnitOfWork, deps: Deps, plan: Plan, seats: int, tenant_id: str, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """What a period of the plan costs: base price, extra seats, add-ons."""
    lines = [
        line(
            SUBSCRIPTION,
            f"{plan.display_name} plan ({_span(start, end)})",
            1,
            _main(plan.price_minor),
            start,
            end,
            plan_id=plan.id,
        )
    ]
    extra = max(seats - plan.included_seats, 0)
    if plan.seat_price_minor is not None and extra:
        lines.append(
            line(
                SEATS,
                f"{extra} extra seat(s) on {plan.display_name}",
                extra,
                _main(plan.seat_price_minor),
                start,
                end,
                plan_id=plan.id,
            )
        )
    for add_on in await store.add_ons_of(uow.session, tenant_id):
        offered = deps.catalog.add_on(add_on.add_on_id)
        if add_on.enabled and offered is not None:
            price = add_on.price_minor if add_on.price_minor is not None else offered.price_minor
            lines.append(
                line(
                    OTHER, f"{offered.display_name} add-on ({_span(start, end)})", 1, _main(price), start, end
                )
            )
    return lines


def _main(minor: int) -> Decimal:
    return Decimal(minor) / 100


async def issue_local(
    uow: UnitOfWork,
    deps: Deps,
    subscription: store.SubscriptionRow,
    lines: list[dict[str, Any]],
    start: datetime,
    end: datetime,
    *,
    key: str,
) -> store.InvoiceRow | None:
    """Issue and settle a local invoice, once per `key`; None if it was issued before."""
    provider_id = f"local_{subscription.id}_{key}"
    if await store.invoice_by_provider_id(uow.session, provider_id) is not None:
        return None
    acct = await store.get_account(uow.session, subscription.tenant_id, lock=True)
    assert acct is not None
    count = acct.invoice_count + 1
    await store.update_account(uow.session, acct.tenant_id, {"invoice_count": count})
    now = uow.clock.now()
    total = sum(int(item["amount_minor"]) for item in lines)
    invoice_id = new_id("inv", at=now)
    values = {
        "id": invoice_id,
        "tenant_id": subscription.tenant_id,
        "subscription_id": subscription.id,
        "number": f"NEXUS-{acct.tenant_id[-6:].upper()}-{count:04d}",
        "status": "paid",
        "currency": deps.catalog.currency,
        "subtotal_minor": total,
        "total_minor": total,
        "amount_due_minor": max(total, 0),
        "amount_paid_minor": max(total, 0),
        "amount_remaining_minor": 0,
        "lines": lines,
        "period_start": start,
        "period_end": end,
        "due_time": None,
        "paid_time": now,
        "finalize_time": now,
        "attempt_count": 1 if total > 0 else 0,
        "next_attempt_time": None,
        "hosted_url": f"{deps.public_url}/console/invoices/{invoice_id}",
        "pdf_url": None,
        "provider_invoice_id": provider_id,
        "create_time": now,
        "update_time": now,
    }
    await store.upsert_invoice(uow.session, values)
    row = await store.invoice_by_provider_id(uow.session, provider_id)
    assert row is not None
    await uow.append_event("invoice.paid", event_body(row), tenant_id=row.tenant_id, subject=row.id)
    return row


async def mirror(
    uow: UnitOfWork, deps: Deps, tenant_id: str, subscription_id: str | None, invoice: ProviderInvoice
) -> tuple[store.InvoiceRow, store.InvoiceRow | None]:
    """Store the provider's invoice as it stands now; (the row, the row before, if any)."""
    before = await store.invoice_by_provider_id(uow.session, invoice.id)
    now = uow.clock.now()
    lines = [
        line(
            _kind_of(item.metadata.get("nexus_kind", ""), item.lookup_key, item.proration),
            item.description or item.lookup_key,
            item.quantity,
            Decimal(item.amount_minor) / 100 / (item.quantity or 1),
            item.period_start,
            item.period_end,
            plan_id=_plan_of_key(item.lookup_key),
            metric=item.metadata.get("metric", ""),
            amount_minor=item.amount_minor,
        )
        for item in invoice.lines
    ]
    finalized = before.finalize_time if before is not None else None
    if finalized is None and invoice.status in ("open", "paid", "uncollectible"):
        finalized = now
    values = {
        "id": before.id if before is not None else new_id("inv", at=now),  # ties in a second: mirror order
        "tenant_id": tenant_id,
        "subscription_id": subscription_id,
        "number": invoice.number or None,
        "status": invoice.status,
        "currency": invoice.currency.upper(),
        "subtotal_minor": invoice.subtotal_minor,
        "total_minor": invoice.total_minor,
        "amount_due_minor": invoice.amount_due_minor,
        "amount_paid_minor": invoice.amount_paid_minor,
        "amount_remaining_minor": invoice.amount_remaining_minor,
        "lines": lines,
        "period_start": invoice.period_start,
        "period_end": invoice.period_end,
        "due_time": invoice.due_date,
        "paid_time": invoice.paid_at,
        "finalize_time": finalized,
        "attempt_count": invoice.attempt_count,
        "next_attempt_time": invoice.next_payment_attempt,
        "hosted_url": invoice.hosted_invoice_url or None,
        "pdf_url": invoice.invoice_pdf or None,
        "provider_invoice_id": invoice.id,
        "create_time": before.create_time if before is not None else invoice.created,
        "update_time": now,
    }
    await store.upsert_invoice(uow.session, values)
    row = await store.invoice_by_provider_id(uow.session, invoice.id)
    assert row is not None
    return row, before


def _kind_of(nexus_kind: str, lookup_key: str, proration: bool) -> str:
    if proration:
        return PRORATION
    if nexus_kind in (OVERAGE, CREDITS):
        return nexus_kind
    if lookup_key.startswith("nexus_plan_"):
        return SUBSCRIPTION
    if lookup_key.startswith("nexus_seat_"):
        return SEATS
    return OTHER


def _plan_of_key(lookup_key: str) -> str:
    for prefix in ("nexus_plan_", "nexus_seat_"):
        if lookup_key.startswith(prefix):
            return lookup_key.removeprefix(prefix)
    return ""


def event_body(row: store.InvoiceRow) -> dict[str, object]:
    return {
        "invoice_id": row.id,
        "tenant_id": row.tenant_id,
        "subscription_id": row.subscription_id or "",
        "number": row.number or "",
        "status": row.status,
        "currency": row.currency,
        "total_minor": row.total_minor,
        "amount_due_minor": row.amount_due_minor,
        "amount_paid_minor": row.amount_paid_minor,
    }
