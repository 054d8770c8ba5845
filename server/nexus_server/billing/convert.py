"""Billing's domain values to and from the wire: plans, subscriptions, invoices, cycle
reports, revenue. Money becomes `google.type.Money` here and nowhere else."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from google.protobuf import json_format, struct_pb2
from google.type import money_pb2

from nexus.billing.v1 import (
    add_on_pb2,
    credit_pb2,
    credit_rate_pb2,
    invoice_pb2,
    plan_pb2,
    revenue_pb2,
    subscription_pb2,
)
from nexus.billing.v1 import billing_cycle_pb2 as cycle_pb
from nexus.billing.v1 import billing_service_pb2 as pb
from nexus_server.billing import add_ons, cycle, ledger, ledger_store, revenue, rules, store
from nexus_server.billing.catalog import AddOn, Catalog, CreditPackage, CreditRate, Plan
from nexus_server.common.errors import FieldViolation
from nexus_server.common.timestamps import duration, timestamp

NANOS = Decimal(1_000_000_000)


def money(amount: Decimal, currency: str) -> money_pb2.Money:
    """An exact amount in the main unit: whole units and nanos of the same sign."""
    units = int(amount)  # truncates toward zero, as Money wants
    nanos = int(((amount - units) * NANOS).to_integral_value())
    return money_pb2.Money(currency_code=currency, units=units, nanos=nanos)


def minor(amount_minor: int, currency: str) -> money_pb2.Money:
    return money(Decimal(amount_minor) / 100, currency)


def plan(p: Plan, catalog: Catalog) -> plan_pb2.Plan:
    message = plan_pb2.Plan(
        id=p.id,
        display_name=p.display_name,
        description=p.description,
        price=minor(p.price_minor, catalog.currency),
        billing_interval=plan_pb2.BILLING_INTERVAL_YEAR
        if p.interval == "year"
        else plan_pb2.BILLING_INTERVAL_MONTH,
        rate_limit_per_minute=p.rate_limit_per_minute,
        included_seats=p.included_seats,
        self_serve=p.self_serve,
        features=list(p.features),
    )
    for q in p.quotas:
        quota = message.quotas.add(metric=q.metric, included_quantity=q.included, unlimited=q.unlimited)
        if q.overage_unit_price is not None and not q.unlimited:
            quota.overage_unit_price.CopyFrom(money(q.overage_unit_price, catalog.currency))
    if p.seat_price_minor is not None:
        message.seat_price.CopyFrom(minor(p.seat_price_minor, catalog.currency))
    if p.trial_days:
        message.trial_period.CopyFrom(duration(timedelta(days=p.trial_days)))
    return message


_STATUS = {
    rules.TRIALING: subscription_pb2.SUBSCRIPTION_STATUS_TRIALING,
    rules.ACTIVE: subscription_pb2.SUBSCRIPTION_STATUS_ACTIVE,
    rules.INCOMPLETE: subscription_pb2.SUBSCRIPTION_STATUS_INCOMPLETE,
    rules.PAST_DUE: subscription_pb2.SUBSCRIPTION_STATUS_PAST_DUE,
    rules.SUSPENDED: subscription_pb2.SUBSCRIPTION_STATUS_SUSPENDED,
    rules.CANCELED: subscription_pb2.SUBSCRIPTION_STATUS_CANCELED,
}


def _set_time(message: Any, name: str, value: datetime | None) -> None:
    if value is not None:
        getattr(message, name).CopyFrom(timestamp(value))


def subscription(row: store.SubscriptionRow, customer_id: str | None) -> subscription_pb2.Subscription:
    message = subscription_pb2.Subscription(
        id=row.id,
        tenant_id=row.tenant_id,
        plan_id=row.plan_id,
        status=_STATUS[row.status],
        seats=row.seats,
        current_period_start_time=timestamp(row.period_start),
        current_period_end_time=timestamp(row.period_end),
        cancel_at_period_end=row.cancel_at_period_end,
        stripe_customer_id=customer_id or "",
        stripe_subscription_id=row.provider_subscription_id or "",
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
    )
    _set_time(message, "cancel_time", row.cancel_time)
    _set_time(message, "end_time", row.end_time)
    _set_time(message, "trial_end_time", row.trial_end_time)
    if row.status == rules.PAST_DUE:
        _set_time(message, "grace_period_end_time", row.grace_end_time)
    if row.scheduled_plan_id:
        message.scheduled_change.CopyFrom(
            subscription_pb2.ScheduledPlanChange(
                plan_id=row.scheduled_plan_id,
                seats=row.scheduled_seats or row.seats,
                effective_time=timestamp(row.period_end),
            )
        )
    return message


_INVOICE_STATUS = {
    "draft": invoice_pb2.INVOICE_STATUS_DRAFT,
    "open": invoice_pb2.INVOICE_STATUS_OPEN,
    "paid": invoice_pb2.INVOICE_STATUS_PAID,
    "void": invoice_pb2.INVOICE_STATUS_VOID,
    "uncollectible": invoice_pb2.INVOICE_STATUS_UNCOLLECTIBLE,
}
INVOICE_STATUS_NAMES = {v: k for k, v in _INVOICE_STATUS.items()}
_LINE_KIND = {
    "subscription": invoice_pb2.INVOICE_LINE_KIND_SUBSCRIPTION,
    "seats": invoice_pb2.INVOICE_LINE_KIND_SEATS,
    "overage": invoice_pb2.INVOICE_LINE_KIND_OVERAGE,
    "proration": invoice_pb2.INVOICE_LINE_KIND_PRORATION,
    "credits": invoice_pb2.INVOICE_LINE_KIND_CREDITS,
    "other": invoice_pb2.INVOICE_LINE_KIND_OTHER,
}


def invoice(row: store.InvoiceRow) -> invoice_pb2.Invoice:
    c = row.currency
    message = invoice_pb2.Invoice(
        id=row.id,
        tenant_id=row.tenant_id,
        subscription_id=row.subscription_id or "",
        number=row.number or "",
        status=_INVOICE_STATUS.get(row.status, invoice_pb2.INVOICE_STATUS_UNSPECIFIED),
        subtotal=minor(row.subtotal_minor, c),
        total=minor(row.total_minor, c),
        amount_due=minor(row.amount_due_minor, c),
        amount_paid=minor(row.amount_paid_minor, c),
        amount_remaining=minor(row.amount_remaining_minor, c),
        period_start_time=timestamp(row.period_start),
        period_end_time=timestamp(row.period_end),
        payment_attempt_count=row.attempt_count,
        hosted_invoice_url=row.hosted_url or "",
        invoice_pdf_url=row.pdf_url or "",
        stripe_invoice_id=row.provider_invoice_id,
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
    )
    _set_time(message, "due_time", row.due_time)
    _set_time(message, "paid_time", row.paid_time)
    _set_time(message, "next_payment_attempt_time", row.next_attempt_time)
    for item in row.lines:
        message.lines.add(
            kind=_LINE_KIND.get(str(item["kind"]), invoice_pb2.INVOICE_LINE_KIND_OTHER),
            description=str(item["description"]),
            plan_id=str(item.get("plan_id", "")),
            metric=str(item.get("metric", "")),
            quantity=int(item["quantity"]),
            unit_price=money(Decimal(str(item["unit_price"])), c),
            amount=minor(int(item["amount_minor"]), c),
            period_start_time=timestamp(datetime.fromisoformat(str(item["period_start"]))),
            period_end_time=timestamp(datetime.fromisoformat(str(item["period_end"]))),
        )
    return message


_ACTION = {
    cycle.REMINDER: cycle_pb.BILLING_CYCLE_ACTION_KIND_REMINDER_SENT,
    cycle.SUSPENDED: cycle_pb.BILLING_CYCLE_ACTION_KIND_TENANT_SUSPENDED,
    cycle.REACTIVATED: cycle_pb.BILLING_CYCLE_ACTION_KIND_TENANT_REACTIVATED,
    cycle.ENDED: cycle_pb.BILLING_CYCLE_ACTION_KIND_SUBSCRIPTION_ENDED,
}


def cycle_report(report: cycle.Report, currency: str) -> pb.RunBillingCycleResponse:
    reply = pb.RunBillingCycleResponse(
        as_of_time=timestamp(report.as_of),
        dry_run=report.dry_run,
        subscriptions_examined=report.examined,
        overage_charges_already_billed=report.already_billed,
        periods_renewed=report.renewed,
    )
    for c in report.charges:
        reply.overage_charges.add(
            tenant_id=c.tenant_id,
            subscription_id=c.subscription_id,
            plan_id=c.plan_id,
            metric=c.metric,
            period_start_time=timestamp(c.period_start),
            period_end_time=timestamp(c.period_end),
            included_quantity=c.included,
            used_quantity=c.used,
            overage_quantity=c.overage,
            unit_price=money(c.unit_price, currency),
            amount=minor(c.amount_minor, currency),
            stripe_invoice_item_id=c.item_id,
        )
    for a in report.actions:
        reply.actions.add(
            tenant_id=a.tenant_id,
            subscription_id=a.subscription_id,
            kind=_ACTION[a.kind],
            detail=a.detail[:500],
        )
    for tenant_id, subscription_id, message in report.failures:
        reply.failures.add(tenant_id=tenant_id, subscription_id=subscription_id, message=message)
    return reply


def revenue_metrics(r: revenue.Revenue, currency: str) -> revenue_pb2.RevenueMetrics:
    message = revenue_pb2.RevenueMetrics(
        compute_time=timestamp(r.computed),
        mrr=minor(r.mrr_minor, currency),
        arr=minor(r.mrr_minor * 12, currency),
        paying_subscriptions=r.paying,
        period_start_time=timestamp(r.start),
        period_end_time=timestamp(r.end),
        overage_revenue=minor(r.overage_minor, currency),
        credit_revenue=minor(r.credit_minor, currency),
        add_on_mrr=minor(r.add_on_mrr_minor, currency),
    )
    for p in r.plans:
        message.plans.add(
            plan_id=p.plan_id,
            subscribers=p.subscribers,
            past_due_subscribers=p.past_due,
            mrr=minor(p.mrr_minor, currency),
        )
    return message


def add_on(a: AddOn, currency: str) -> add_on_pb2.AddOn:
    return add_on_pb2.AddOn(
        id=a.id, display_name=a.display_name, description=a.description, price=minor(a.price_minor, currency)
    )


def tenant_add_on(v: add_ons.TenantAddOn, currency: str) -> add_on_pb2.TenantAddOn:
    message = add_on_pb2.TenantAddOn(
        tenant_id=v.tenant_id,
        add_on_id=v.add_on.id,
        enabled=v.enabled,
        price=minor(v.price_minor, currency),
        price_overridden=v.overridden,
    )
    _set_time(message, "update_time", v.update_time)
    return message


def price_minor(
    m: money_pb2.Money, currency: str, field: str, maximum: int
) -> tuple[int, list[FieldViolation]]:
    """A price in whole minor units from the wire, or the violations that make it unusable."""
    bad: list[FieldViolation] = []
    if m.currency_code != currency:
        bad.append(
            FieldViolation(f"{field}.currency_code", f"must be {currency}, the installation's currency")
        )
    if (m.units < 0 or m.nanos < 0) or (m.units > 0 and m.nanos < 0) or abs(m.nanos) >= 1_000_000_000:
        bad.append(FieldViolation(field, "must be a non-negative amount with nanos below one unit"))
    elif m.nanos % 10_000_000:
        bad.append(FieldViolation(f"{field}.nanos", "must be whole cents"))
    amount = m.units * 100 + m.nanos // 10_000_000
    if not bad and amount > maximum:
        bad.append(FieldViolation(field, f"must be at most {maximum // 100:,}"))
    return amount, bad


# --- credits ----------------------------------------------------------------------------------

KIND = {
    "purchase": credit_pb2.CREDIT_TRANSACTION_KIND_PURCHASE,
    "consume": credit_pb2.CREDIT_TRANSACTION_KIND_CONSUME,
    "grant": credit_pb2.CREDIT_TRANSACTION_KIND_GRANT,
    "refund": credit_pb2.CREDIT_TRANSACTION_KIND_REFUND,
    "expire": credit_pb2.CREDIT_TRANSACTION_KIND_EXPIRE,
    "reserve": credit_pb2.CREDIT_TRANSACTION_KIND_RESERVE,
    "release": credit_pb2.CREDIT_TRANSACTION_KIND_RELEASE,
}
KIND_NAMES = {v: k for k, v in KIND.items()}
_STATE = {
    "held": credit_pb2.CREDIT_RESERVATION_STATE_HELD,
    "committed": credit_pb2.CREDIT_RESERVATION_STATE_COMMITTED,
    "released": credit_pb2.CREDIT_RESERVATION_STATE_RELEASED,
    "expired": credit_pb2.CREDIT_RESERVATION_STATE_EXPIRED,
}


def credit_package(p: CreditPackage, currency: str) -> credit_pb2.CreditPackage:
    return credit_pb2.CreditPackage(
        id=p.id,
        display_name=p.display_name,
        description=p.description,
        credits=p.credits,
        price=minor(p.price_minor, currency),
    )


def credit_rate(r: CreditRate) -> credit_rate_pb2.CreditRate:
    return credit_rate_pb2.CreditRate(
        provider=r.provider,
        model=r.model,
        input_credits_per_million_tokens=r.input_per_million,
        output_credits_per_million_tokens=r.output_per_million,
    )


def credit_balance(tenant_id: str, row: ledger_store.BalanceRow | None) -> credit_pb2.CreditBalance:
    message = credit_pb2.CreditBalance(tenant_id=tenant_id)
    if row is not None:
        message.balance = row.balance
        message.last_transaction_id = row.last_transaction_id or ""
        if row.last_transaction_id:
            _set_time(message, "update_time", row.update_time)
    return message


def credit_transaction(row: ledger_store.TransactionRow) -> credit_pb2.CreditTransaction:
    message = credit_pb2.CreditTransaction(
        id=row.id,
        tenant_id=row.tenant_id,
        kind=KIND[row.kind],
        amount=row.amount,
        balance_after=row.balance_after,
        idempotency_key=ledger.shown_key(row.idempotency_key),
        description=row.description,
        credit_package_id=row.credit_package_id or "",
        actor=row.actor,
        create_time=timestamp(row.create_time),
    )
    if row.metadata:
        message.metadata.update(row.metadata)
    if row.model_usage:
        u = row.model_usage
        message.model_usage.CopyFrom(
            credit_rate_pb2.ModelUsage(
                provider=str(u["provider"]),
                model=str(u["model"]),
                input_tokens=int(u["input_tokens"]),
                output_tokens=int(u["output_tokens"]),
            )
        )
    return message


def reservation(row: ledger_store.ReservationRow) -> credit_pb2.CreditReservation:
    message = credit_pb2.CreditReservation(
        id=row.id,
        tenant_id=row.tenant_id,
        amount=row.amount,
        state=_STATE[row.state],
        consumed=row.consumed,
        idempotency_key=row.idempotency_key,
        expire_time=timestamp(row.expire_time),
        create_time=timestamp(row.create_time),
        balance_after=row.balance_after,
    )
    _set_time(message, "settle_time", row.settle_time)
    return message


def usage(m: credit_rate_pb2.ModelUsage) -> ledger.Usage:
    return ledger.Usage(m.provider, m.model, m.input_tokens, m.output_tokens)


def struct_dict(s: struct_pb2.Struct) -> tuple[dict[str, Any] | None, int]:
    """The metadata as a dict (None if empty) and its size as JSON, for the 8 KiB limit."""
    if not s.fields:
        return None, 0
    value = json_format.MessageToDict(s)
    return value, len(json.dumps(value, separators=(",", ":")).encode())
