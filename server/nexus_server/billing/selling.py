"""Selling plans: checkout, the customer portal, plan and seat changes, cancel and resume.

Under Stripe these ask Stripe and change Nexus only through what Stripe answers (the
re-read subscription of a change, the webhooks of a checkout). Under the local provider
they apply the change at once and issue the invoice it implies (paid when issued).

Every workflow takes the tenant's account lock first, so it decides on the latest state.
Calls to Stripe happen under that lock too: they are rare (people clicking buttons), carry
idempotency keys, and holding the lock is what keeps a webhook for the same tenant from
interleaving with the change.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from nexus_server.billing import invoices, rules, store, subscriptions, sync
from nexus_server.billing.catalog import Plan
from nexus_server.billing.ledger import fingerprint
from nexus_server.billing.ports import Deps
from nexus_server.billing.provider import (
    CheckoutRequest,
    LineItem,
    ProviderError,
    ProviderRejected,
    ProviderSubscription,
    ProviderUnavailable,
)
from nexus_server.common.errors import FailedPrecondition, NotFound, Unavailable
from nexus_server.common.ids import new_id
from nexus_server.common.validation import Violations
from nexus_server.db.uow import UnitOfWork

MAX_SEATS = 10_000
MAX_URL = 2048
IDEMPOTENCY_WINDOW = timedelta(hours=24)
LOCAL_CHECKOUT_TTL = timedelta(hours=24)


@dataclass(frozen=True)
class Checkout:
    session_id: str
    url: str
    expire_time: datetime


# --- validation -------------------------------------------------------------------------------


def redirect_url(value: str, field: str, allowed_hosts: tuple[str, ...], bad: Violations) -> str:
    """An absolute https URL (http on loopback) on an allowed host; "" stays "" (the default)."""
    if not value:
        return ""
    parts = urlsplit(value)
    host = (parts.hostname or "").lower()
    loopback = host in ("localhost", "127.0.0.1", "::1") or host.endswith(".localhost")
    ok = (
        len(value) <= MAX_URL
        and (parts.scheme == "https" or (parts.scheme == "http" and loopback))
        and bool(host)
        and (loopback or host in allowed_hosts)
    )
    if not ok:
        bad.add(field, "must be an absolute https URL (http only on a loopback host) on an allowed host")
        bad.reason = "REDIRECT_URL_NOT_ALLOWED"
    return value


def seats_in_range(value: int, field: str, bad: Violations) -> int:
    if value != 0 and not 1 <= value <= MAX_SEATS:
        bad.add(field, f"must be from 1 to {MAX_SEATS:,}, or 0 for the default")
    return value


def paid_plan(deps: Deps, plan_id: str, field: str, bad: Violations) -> Plan | None:
    """The named plan if it may be bought; a field violation for the free plan."""
    if not plan_id:
        bad.add(field, "is required")
        return None
    if plan_id == deps.catalog.free.id:
        bad.add(field, "names the free plan, which is not bought: cancel the paid plan instead")
        return None
    return deps.catalog.plan(plan_id)


def self_serve(plan: Plan | None, plan_id: str) -> Plan:
    if plan is None:
        raise NotFound(f"plan {plan_id!r} does not exist")
    if not plan.self_serve:
        raise FailedPrecondition(
            f"plan {plan.id!r} is sold by contract, not self-serve", reason="PLAN_NOT_SELF_SERVE"
        )
    return plan


def line_items(plan: Plan, seats: int) -> list[LineItem]:
    items = [LineItem(sync.plan_key(plan.id), 1)]
    extra = max(seats - plan.included_seats, 0)
    if plan.per_seat and extra:
        items.append(LineItem(sync.seat_key(plan.id), extra))
    return items


async def subscription_items(
    uow: UnitOfWork, deps: Deps, tenant_id: str, plan: Plan, seats: int
) -> list[LineItem]:
    """Every item a Stripe subscription on `plan` holds: the plan, extra seats, and each
    enabled add-on (at the tenant's own price where one was set). Updates send all of them:
    the provider makes the subscription's items exactly these."""
    add_ons = [
        LineItem(sync.add_on_key(r.add_on_id, tenant_id if r.price_minor is not None else ""), 1)
        for r in await store.add_ons_of(uow.session, tenant_id)
        if r.enabled and deps.catalog.add_on(r.add_on_id) is not None
    ]
    return [*line_items(plan, seats), *add_ons]


def provider_failure(error: ProviderError) -> Exception:
    if isinstance(error, ProviderRejected):
        return FailedPrecondition(
            f"the payment provider refused: {error}",
            reason="PAYMENT_PROVIDER_REJECTED",
            metadata={"provider_code": error.code},
        )
    assert isinstance(error, ProviderUnavailable | ProviderError)
    return Unavailable(f"the payment provider is unavailable: {error}", reason="PAYMENT_PROVIDER_UNAVAILABLE")


# --- idempotent requests ----------------------------------------------------------------------


async def remembered(
    uow: UnitOfWork, tenant_id: str, rpc: str, key: str, request: Any
) -> dict[str, Any] | None:
    """The response an earlier call with this key returned, if any; IDEMPOTENCY_KEY_REUSED if
    the key came with a different request."""
    if not key:
        return None
    found = await store.get_request(uow.session, tenant_id, rpc, key, uow.clock.now() - IDEMPOTENCY_WINDOW)
    if found is None:
        return None
    stored, response = found
    if stored != fingerprint(request):
        raise FailedPrecondition(
            f"idempotency key {key!r} was used with a different request", reason="IDEMPOTENCY_KEY_REUSED"
        )
    return response


async def remember(
    uow: UnitOfWork, tenant_id: str, rpc: str, key: str, request: Any, response: dict[str, Any]
) -> None:
    if key:
        await store.put_request(
            uow.session, tenant_id, rpc, key, fingerprint(request), response, uow.clock.now()
        )


# --- the workflows ----------------------------------------------------------------------------


def paid_state(plan: Plan, seats: int, now: datetime, *, trial: bool) -> subscriptions.State:
    """A new paid subscription starting today. With a trial, as Stripe does it: the trial is
    a first period of its own, and the paid periods are counted from the day it ends."""
    anchor = rules.midnight(now)
    start, end = rules.period_at(anchor, plan.interval, now)
    trial_end = anchor + timedelta(days=plan.trial_days) if trial and plan.trial_days else None
    if trial_end is not None:
        start, end, anchor = anchor, trial_end, trial_end
    return subscriptions.State(
        plan.id,
        rules.TRIALING if trial_end else rules.ACTIVE,
        seats,
        start,
        end,
        anchor,
        interval=plan.interval,
        trial_end_time=trial_end,
    )


async def default_seats(uow: UnitOfWork, deps: Deps, tenant_id: str, plan: Plan, requested: int) -> int:
    base = requested or plan.included_seats or 1
    if plan.per_seat:
        base = max(base, await deps.tenants.member_count(uow, tenant_id))
    return base


async def checkout(
    uow: UnitOfWork,
    deps: Deps,
    tenant_id: str,
    plan: Plan,
    seats: int,
    success_url: str,
    cancel_url: str,
    key: str,
) -> Checkout:
    request = {"plan_id": plan.id, "seats": seats, "success_url": success_url, "cancel_url": cancel_url}
    acct = await subscriptions.account(uow, deps, tenant_id, lock=True)
    earlier = await remembered(uow, tenant_id, "checkout", key, request)
    if earlier is not None:
        return Checkout(earlier["id"], earlier["url"], datetime.fromisoformat(earlier["expire_time"]))
    current = await subscriptions.current(uow, deps, tenant_id)
    if current.plan_id != deps.catalog.free.id and current.status != rules.INCOMPLETE:
        raise FailedPrecondition(
            f"tenant {tenant_id} already pays for the {current.plan_id} plan: use ChangePlan",
            reason="PAID_SUBSCRIPTION_EXISTS",
        )
    seats = await default_seats(uow, deps, tenant_id, plan, seats)
    success = success_url or f"{deps.public_url}/console/billing?checkout=success"
    cancel = cancel_url or f"{deps.public_url}/console/billing?checkout=canceled"
    now = uow.clock.now()
    first = await _first_paid(uow, tenant_id)
    if deps.provider is None:
        customer = acct.customer_id or f"lcus_{tenant_id.removeprefix('ten_')}"
        state = paid_state(plan, seats, now, trial=first)
        row = await subscriptions.start_paid(uow, deps, acct, state, customer)
        lines = await invoices.period_lines(
            uow, deps, plan, seats, tenant_id, row.period_start, row.period_end
        )
        if row.status == rules.TRIALING:
            lines = [
                {**item, "amount_minor": 0, "description": item["description"] + " (trial)"} for item in lines
            ]
        await invoices.issue_local(
            uow, deps, row, lines, row.period_start, row.period_end, key=f"{row.period_start:%Y%m%d}"
        )
        result = Checkout(new_id("cs", at=now), success, now + LOCAL_CHECKOUT_TTL)
    else:
        emails = await deps.tenants.admin_emails(uow, tenant_id)
        try:
            session = await deps.provider.create_checkout(
                CheckoutRequest(
                    tenant_id=tenant_id,
                    customer_id=acct.customer_id or "",
                    customer_email=emails[0] if emails and not acct.customer_id else "",
                    items=await subscription_items(uow, deps, tenant_id, plan, seats),
                    success_url=success,
                    cancel_url=cancel,
                    trial_days=plan.trial_days if first else 0,
                    idempotency_key=f"checkout:{tenant_id}:{key or new_id('req', at=now)}",
                    metadata={"tenant_id": tenant_id, "plan_id": plan.id, "seats": str(seats)},
                )
            )
        except ProviderError as error:
            raise provider_failure(error) from error
        result = Checkout(session.id, session.url, session.expire_time)
    await remember(
        uow,
        tenant_id,
        "checkout",
        key,
        request,
        {"id": result.session_id, "url": result.url, "expire_time": result.expire_time.isoformat()},
    )
    return result


async def _first_paid(uow: UnitOfWork, tenant_id: str) -> bool:
    """A trial comes with a tenant's first paid subscription only."""
    acct = await store.get_account(uow.session, tenant_id)
    return acct is None or acct.customer_id is None


async def portal(uow: UnitOfWork, deps: Deps, tenant_id: str, return_url: str) -> tuple[str, str]:
    acct = await subscriptions.account(uow, deps, tenant_id)
    if not acct.customer_id:
        raise FailedPrecondition(
            f"tenant {tenant_id} has never completed a paid checkout", reason="BILLING_ACCOUNT_MISSING"
        )
    back = return_url or f"{deps.public_url}/console/billing"
    if deps.provider is None:
        # Nothing to manage offline: the "portal" is the console's billing page.
        return new_id("bps", at=uow.clock.now()), back
    try:
        session = await deps.provider.create_portal(acct.customer_id, back)
    except ProviderError as error:
        raise provider_failure(error) from error
    return session.id, session.url


async def change_plan(
    uow: UnitOfWork, deps: Deps, tenant_id: str, plan: Plan, seats: int, at_period_end: bool, key: str
) -> store.SubscriptionRow:
    request = {"plan_id": plan.id, "seats": seats, "at_period_end": at_period_end}
    await subscriptions.account(uow, deps, tenant_id, lock=True)
    row = await subscriptions.current(uow, deps, tenant_id)
    if await remembered(uow, tenant_id, "change_plan", key, request) is not None:
        return row
    if row.plan_id == deps.catalog.free.id:
        raise FailedPrecondition(
            f"tenant {tenant_id} is on the free plan: subscribe through CreateCheckoutSession",
            reason="PAYMENT_METHOD_REQUIRED",
        )
    if row.status not in rules.CHANGEABLE:
        raise FailedPrecondition(
            f"the subscription is {row.status}",
            reason="SUBSCRIPTION_NOT_ACTIVE",
            metadata={"status": row.status.upper()},
        )
    seats = seats or row.seats
    if (plan.id, seats) == (row.plan_id, row.seats):
        state = subscriptions.with_(subscriptions.state_of(row), scheduled_plan_id=None, scheduled_seats=None)
        row, _ = await subscriptions.apply(uow, deps, row, state)
    elif at_period_end and deps.provider is None:
        state = subscriptions.with_(
            subscriptions.state_of(row), scheduled_plan_id=plan.id, scheduled_seats=seats
        )
        row, _ = await subscriptions.apply(uow, deps, row, state)
    elif deps.provider is None:
        row = await _change_now_locally(uow, deps, row, plan, seats)
    else:
        # Under Stripe, a change without proration is Stripe's own "at period end": the
        # items change now and the next invoice charges the new price. The new plan's limits
        # apply at once (Stripe reports the new items); the note in docs/billing.md says so.
        assert row.provider_subscription_id
        try:
            mirrored = await deps.provider.update_items(
                row.provider_subscription_id,
                await subscription_items(uow, deps, tenant_id, plan, seats),
                prorate=not at_period_end,
                idempotency_key=f"change:{row.id}:{plan.id}:{seats}:{key or row.update_time.isoformat()}",
            )
        except ProviderError as error:
            raise provider_failure(error) from error
        row, _ = await subscriptions.apply(uow, deps, row, state_from_provider(deps, mirrored, row))
    await remember(uow, tenant_id, "change_plan", key, request, {"subscription_id": row.id})
    return row


async def _change_now_locally(
    uow: UnitOfWork, deps: Deps, row: store.SubscriptionRow, plan: Plan, seats: int
) -> store.SubscriptionRow:
    """Switch at once and invoice the difference for the rest of the period."""
    now = uow.clock.now()
    old_plan = deps.catalog.plan(row.plan_id) or plan
    old = sum(
        int(i["amount_minor"])
        for i in await invoices.period_lines(
            uow, deps, old_plan, row.seats, row.tenant_id, row.period_start, row.period_end
        )
    )
    new = sum(
        int(i["amount_minor"])
        for i in await invoices.period_lines(
            uow, deps, plan, seats, row.tenant_id, row.period_start, row.period_end
        )
    )
    state = subscriptions.with_(
        subscriptions.state_of(row),
        plan_id=plan.id,
        seats=seats,
        scheduled_plan_id=None,
        scheduled_seats=None,
    )
    row, _ = await subscriptions.apply(uow, deps, row, state)
    credit = -rules.prorated_minor(old, row.period_start, row.period_end, now)
    charge = rules.prorated_minor(new, row.period_start, row.period_end, now)
    if row.status == rules.TRIALING:
        return row
    lines = [
        invoices.line(
            invoices.PRORATION,
            f"Unused time on {old_plan.display_name}",
            1,
            Decimal(credit) / 100,
            now,
            row.period_end,
            plan_id=old_plan.id,
            amount_minor=credit,
        ),
        invoices.line(
            invoices.PRORATION,
            f"Remaining time on {plan.display_name}",
            1,
            Decimal(charge) / 100,
            now,
            row.period_end,
            plan_id=plan.id,
            amount_minor=charge,
        ),
    ]
    await invoices.issue_local(uow, deps, row, lines, now, row.period_end, key=f"change{now:%Y%m%d%H%M%S%f}")
    return row


async def cancel(
    uow: UnitOfWork, deps: Deps, tenant_id: str, immediately: bool, reason: str
) -> store.SubscriptionRow:
    await subscriptions.account(uow, deps, tenant_id, lock=True)
    row = await subscriptions.current(uow, deps, tenant_id)
    if row.plan_id == deps.catalog.free.id:
        raise FailedPrecondition(f"tenant {tenant_id} is on the free plan", reason="FREE_PLAN_NOT_CANCELABLE")
    if row.cancel_at_period_end and not immediately:
        return row
    now = uow.clock.now()
    if reason:
        await store.update_subscription(uow.session, row.id, {"cancel_reason": reason})
    state = subscriptions.state_of(row)
    if deps.provider is not None and row.provider_subscription_id:
        try:
            if immediately:
                mirrored = await deps.provider.cancel_now(
                    row.provider_subscription_id, idempotency_key=f"cancel:{row.id}"
                )
            else:
                mirrored = await deps.provider.set_cancel_at_period_end(
                    row.provider_subscription_id,
                    True,
                    idempotency_key=f"cancel-at-end:{row.id}:{row.update_time.isoformat()}",
                )
        except ProviderError as error:
            raise provider_failure(error) from error
        state = state_from_provider(deps, mirrored, row)
    elif immediately:
        state = subscriptions.with_(state, status=rules.CANCELED, cancel_time=now, end_time=now)
    else:
        state = subscriptions.with_(state, cancel_at_period_end=True, cancel_time=now)
    fresh, _ = await subscriptions.apply(uow, deps, row, state)
    return fresh


async def resume(uow: UnitOfWork, deps: Deps, tenant_id: str) -> store.SubscriptionRow:
    await subscriptions.account(uow, deps, tenant_id, lock=True)
    row = await subscriptions.current(uow, deps, tenant_id)
    if row.status not in rules.CHANGEABLE:
        raise FailedPrecondition(
            f"the subscription is {row.status}",
            reason="SUBSCRIPTION_NOT_ACTIVE",
            metadata={"status": row.status.upper()},
        )
    if not row.cancel_at_period_end:
        return row
    state = subscriptions.with_(subscriptions.state_of(row), cancel_at_period_end=False, cancel_time=None)
    if deps.provider is not None and row.provider_subscription_id:
        try:
            mirrored = await deps.provider.set_cancel_at_period_end(
                row.provider_subscription_id,
                False,
                idempotency_key=f"resume:{row.id}:{row.update_time.isoformat()}",
            )
        except ProviderError as error:
            raise provider_failure(error) from error
        state = state_from_provider(deps, mirrored, row)
    fresh, _ = await subscriptions.apply(uow, deps, row, state)
    return fresh


def state_from_provider(
    deps: Deps, sub: ProviderSubscription, row: store.SubscriptionRow | None
) -> subscriptions.State:
    """Nexus's state for a subscription as the provider holds it now."""
    plan_id = next(
        (key.removeprefix(sync.plan_key("")) for key in sub.items if key.startswith(sync.plan_key(""))),
        sub.metadata.get("plan_id", row.plan_id if row else deps.catalog.free.id),
    )
    plan = deps.catalog.plan(plan_id)
    included = plan.included_seats if plan is not None else 0
    extra = sub.items.get(sync.seat_key(plan_id), 0)
    status = rules.from_stripe_status(sub.status, row.status if row else None)
    start, end = rules.midnight(sub.current_period_start), rules.midnight(sub.current_period_end)
    if end <= start:
        end = start + timedelta(days=1)
    return subscriptions.State(
        plan_id=plan_id,
        status=status,
        seats=max(included + extra, 1),
        period_start=start,
        period_end=end,
        anchor=row.anchor if row is not None else rules.midnight(sub.created),
        interval=plan.interval if plan is not None else "month",
        cancel_at_period_end=sub.cancel_at_period_end,
        cancel_time=sub.canceled_at if sub.cancel_at_period_end or status == rules.CANCELED else None,
        end_time=sub.ended_at or (row.end_time if row is not None else None),
        trial_end_time=sub.trial_end,
        scheduled_plan_id=row.scheduled_plan_id if row is not None else None,
        scheduled_seats=row.scheduled_seats if row is not None else None,
        provider_subscription_id=sub.id,
        provider_status=sub.status,
    )
