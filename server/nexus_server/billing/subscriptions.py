"""A tenant's current subscription: reading it (every tenant has one, on the free plan until
it pays), and the one function that moves it to a new state, whoever asks (a checkout, a
webhook's re-read of Stripe, a plan change under the local provider, the cycle).

Every change happens under the tenant's billing account row lock, so concurrent webhooks,
RPCs and cycle runs for one tenant apply one after another, each seeing the last one's
result. `apply` compares the new state with the stored one and reports whether anything
changed, so re-applying the same state (a redelivered or out-of-order event) is a no-op.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from nexus_server.billing import ledger, rules, store
from nexus_server.billing.ports import Deps
from nexus_server.common.errors import NotFound
from nexus_server.common.ids import new_id
from nexus_server.db.uow import UnitOfWork


@dataclass(frozen=True)
class State:
    """What a subscription should be, as a checkout, the provider or a rule says."""

    plan_id: str
    status: str
    seats: int
    period_start: datetime
    period_end: datetime
    anchor: datetime
    interval: str = "month"
    cancel_at_period_end: bool = False
    cancel_time: datetime | None = None
    end_time: datetime | None = None
    trial_end_time: datetime | None = None
    scheduled_plan_id: str | None = None
    scheduled_seats: int | None = None
    provider_subscription_id: str | None = None
    provider_status: str | None = None


_COMPARED = tuple(State.__dataclass_fields__)


def state_of(row: store.SubscriptionRow) -> State:
    return State(**{name: getattr(row, name) for name in _COMPARED})


async def account(uow: UnitOfWork, deps: Deps, tenant_id: str, *, lock: bool = False) -> store.AccountRow:
    """The tenant's billing account, made (with a free-plan subscription) on first touch.
    NotFound if there is no such tenant (or it is deleted)."""
    found = await store.get_account(uow.session, tenant_id, lock=lock)
    if found is not None:
        return found
    facts = await deps.tenants.facts(uow, tenant_id)
    if facts is None or facts.status == "deleted":
        raise NotFound(f"tenant {tenant_id} does not exist")
    now = uow.clock.now()
    subscription_id = new_id("sub", at=now)
    await _insert_free(uow, deps, tenant_id, subscription_id, facts.create_time, now)
    values = {
        "tenant_id": tenant_id,
        "subscription_id": subscription_id,
        "customer_id": None,
        "invoice_count": 0,
        "create_time": now,
        "update_time": now,
    }
    if not await store.insert_account(uow.session, values):
        # Another call made it first; ours is an orphan row that no account names.
        await store.update_subscription(
            uow.session, subscription_id, {"status": rules.CANCELED, "end_time": now}
        )
    found = await store.get_account(uow.session, tenant_id, lock=lock)
    assert found is not None
    return found


async def current(
    uow: UnitOfWork, deps: Deps, tenant_id: str, *, lock: bool = False
) -> store.SubscriptionRow:
    """The tenant's current subscription (a writing unit of work: the first read records it)."""
    acct = await account(uow, deps, tenant_id, lock=lock)
    row = await store.get_subscription(uow.session, acct.subscription_id)
    assert row is not None, "an account names a subscription that exists"
    return row


def _free_state(deps: Deps, created: datetime, now: datetime) -> State:
    anchor = rules.month_anchor(created)
    start, end = rules.period_at(anchor, "month", now)
    return State(deps.catalog.free.id, rules.ACTIVE, 1, start, end, anchor)


async def _insert_free(
    uow: UnitOfWork, deps: Deps, tenant_id: str, subscription_id: str, created: datetime, now: datetime
) -> None:
    s = _free_state(deps, created, now)
    await store.insert_subscription(
        uow.session,
        {
            "id": subscription_id,
            "tenant_id": tenant_id,
            "grace_end_time": None,
            "past_due_time": None,
            "reminders_sent": 0,
            "cancel_reason": None,
            "create_time": now,
            "update_time": now,
            **{name: getattr(s, name) for name in _COMPARED},
        },
    )


async def start_paid(
    uow: UnitOfWork, deps: Deps, acct: store.AccountRow, state: State, customer_id: str
) -> store.SubscriptionRow:
    """End the current subscription (the free one, usually) and make `state` the tenant's
    new current subscription. Caller holds the account lock."""
    now = uow.clock.now()
    old = await store.get_subscription(uow.session, acct.subscription_id)
    if old is not None and old.status != rules.CANCELED:
        await store.update_subscription(
            uow.session, old.id, {"status": rules.CANCELED, "end_time": now, "update_time": now}
        )
    subscription_id = new_id("sub", at=now)
    await store.insert_subscription(
        uow.session,
        {
            "id": subscription_id,
            "tenant_id": acct.tenant_id,
            "grace_end_time": None,
            "past_due_time": None,
            "reminders_sent": 0,
            "cancel_reason": None,
            "create_time": now,
            "update_time": now,
            **{name: getattr(state, name) for name in _COMPARED},
        },
    )
    await store.update_account(
        uow.session,
        acct.tenant_id,
        {"subscription_id": subscription_id, "customer_id": customer_id, "update_time": now},
    )
    row = await store.get_subscription(uow.session, subscription_id)
    assert row is not None
    await _opened(uow, deps, row)
    await _plan_in_force(uow, deps, row)
    await uow.append_event("subscription.created", event_body(row), tenant_id=row.tenant_id, subject=row.id)
    return row


async def apply(
    uow: UnitOfWork, deps: Deps, row: store.SubscriptionRow, state: State
) -> tuple[store.SubscriptionRow, bool]:
    """Move a stored subscription to `state`; (the row now, whether anything changed).
    Entering PAST_DUE starts dunning; leaving it for ACTIVE (paid) ends it and lifts a
    billing suspension; CANCELED ends it and puts the tenant back on the free plan."""
    if state_of(row) == state or row.status == rules.CANCELED:
        return row, False  # nothing new, or ended: CANCELED is final
    now = uow.clock.now()
    values: dict[str, Any] = {name: getattr(state, name) for name in _COMPARED}
    values["update_time"] = now
    if state.status == rules.PAST_DUE and row.status != rules.PAST_DUE:
        values.update(past_due_time=now, grace_end_time=now + deps.grace, reminders_sent=0)
    if state.status in (rules.ACTIVE, rules.TRIALING):
        values.update(past_due_time=None, grace_end_time=None, reminders_sent=0)
    if state.status == rules.CANCELED and row.end_time is None:
        values["end_time"] = state.end_time or now
    await store.update_subscription(uow.session, row.id, values)
    fresh = await store.get_subscription(uow.session, row.id)
    assert fresh is not None
    if (fresh.period_start, fresh.plan_id) != (row.period_start, row.plan_id):
        await _opened(uow, deps, fresh)
    if row.status == rules.SUSPENDED and fresh.status == rules.ACTIVE:
        await deps.tenants.reactivate_after_payment(uow, fresh.tenant_id)
    kind = "subscription.canceled" if fresh.status == rules.CANCELED else "subscription.updated"
    await uow.append_event(kind, event_body(fresh), tenant_id=fresh.tenant_id, subject=fresh.id)
    if fresh.status == rules.CANCELED:
        await _back_to_free(uow, deps, fresh)
    else:
        await _plan_in_force(uow, deps, fresh)
    return fresh, True


async def _back_to_free(uow: UnitOfWork, deps: Deps, ended: store.SubscriptionRow) -> None:
    acct = await store.get_account(uow.session, ended.tenant_id, lock=True)
    if acct is None or acct.subscription_id != ended.id:
        return  # not the current one: the tenant already moved on
    now = uow.clock.now()
    subscription_id = new_id("sub", at=now)
    await _insert_free(uow, deps, ended.tenant_id, subscription_id, now, now)
    await store.update_account(
        uow.session, ended.tenant_id, {"subscription_id": subscription_id, "update_time": now}
    )
    row = await store.get_subscription(uow.session, subscription_id)
    assert row is not None
    await _plan_in_force(uow, deps, row)
    await uow.append_event("subscription.created", event_body(row), tenant_id=row.tenant_id, subject=row.id)


async def _opened(uow: UnitOfWork, deps: Deps, row: store.SubscriptionRow) -> None:
    """Remember the period the subscription entered, so its overage is billed once it ends,
    and grant the plan's monthly credits for it, once (the ledger key names the period)."""
    await store.open_period(
        uow.session,
        {
            "subscription_id": row.id,
            "period_start": row.period_start,
            "period_end": row.period_end,
            "tenant_id": row.tenant_id,
            "plan_id": row.plan_id,
        },
    )
    plan = deps.catalog.plan(row.plan_id)
    if plan is not None and plan.monthly_credits and row.status in (rules.ACTIVE, rules.TRIALING):
        entry = ledger.Entry(
            ledger.GRANT,
            plan.monthly_credits,
            f"monthly:{row.id}:{row.period_start:%Y%m%d}",
            {"subscription": row.id, "period": row.period_start.isoformat()},
            "system",
            f"{plan.display_name} plan: credits for the period from {row.period_start:%d %b %Y}",
            events=("credits.granted",),
        )
        await ledger.write(uow, deps.catalog, row.tenant_id, entry)


async def _plan_in_force(uow: UnitOfWork, deps: Deps, row: store.SubscriptionRow) -> None:
    """Tell the tenants capability which plan's limits apply now: the subscription's, unless
    its first payment has not gone through (INCOMPLETE keeps the free plan's)."""
    plan = row.plan_id if row.status in rules.IN_FORCE else deps.catalog.free.id
    facts = await deps.tenants.facts(uow, row.tenant_id)
    if facts is not None and facts.plan_id != plan:
        await deps.tenants.set_plan(uow, row.tenant_id, plan)
    else:
        await deps.tenants.changed(uow, row.tenant_id)  # a new period moves quotas too


def event_body(row: store.SubscriptionRow) -> dict[str, object]:
    return {
        "subscription_id": row.id,
        "tenant_id": row.tenant_id,
        "plan_id": row.plan_id,
        "status": row.status,
        "seats": row.seats,
        "current_period_start": row.period_start.isoformat(),
        "current_period_end": row.period_end.isoformat(),
        "cancel_at_period_end": row.cancel_at_period_end,
    }


def with_(state: State, **changes: Any) -> State:
    return replace(state, **changes)
