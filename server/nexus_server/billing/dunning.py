"""Dunning: what happens to a subscription whose payment failed.

Entering PAST_DUE (subscriptions.apply) starts a grace period (`NEXUS_DUNNING_GRACE_DAYS`,
7 by default). Reminders go to the tenant's owners and admins through identity's mail
outbox, in the transaction that decides them, at the steps of rules.REMINDER_DAYS that fall
inside the grace period. When it runs out unpaid, the subscription becomes SUSPENDED and the
tenant is suspended (cause `payment_overdue`): the tenants capability refuses its tokens and
keys on every replica within a second. A paid invoice brings it back (subscriptions.apply,
and `reactivate_if_paid` as the cycle's safety net).
"""

from __future__ import annotations

from datetime import datetime

from nexus_server.billing import rules, store
from nexus_server.billing.ports import Deps
from nexus_server.billing.subscriptions import event_body
from nexus_server.db.uow import UnitOfWork


async def remind_if_due(
    uow: UnitOfWork, deps: Deps, row: store.SubscriptionRow, now: datetime, *, dry_run: bool = False
) -> bool:
    if row.status != rules.PAST_DUE or row.past_due_time is None:
        return False
    if not rules.reminder_due(row.past_due_time, row.reminders_sent, deps.grace, now):
        return False
    if dry_run:
        return True
    await store.update_subscription(uow.session, row.id, {"reminders_sent": row.reminders_sent + 1})
    if deps.mail is not None:
        deadline = row.grace_end_time.isoformat() if row.grace_end_time else "soon"
        body = (
            f"The payment for your {row.plan_id} subscription failed.\n\n"
            f"Please update your payment method or pay the open invoice before {deadline}; after that "
            "your organisation's access is suspended until the invoice is paid.\n\n"
            f"Manage billing: {deps.public_url}/console/billing\n"
        )
        for email in await deps.tenants.admin_emails(uow, row.tenant_id):
            await deps.mail(uow, email, "Action needed: your payment failed", body)
    return True


async def suspend_if_expired(
    uow: UnitOfWork, deps: Deps, row: store.SubscriptionRow, now: datetime, *, dry_run: bool = False
) -> bool:
    if row.status != rules.PAST_DUE or row.grace_end_time is None or now < row.grace_end_time:
        return False
    if dry_run:
        return True
    await store.update_subscription(uow.session, row.id, {"status": rules.SUSPENDED, "update_time": now})
    reason = f"payment overdue since {row.past_due_time:%Y-%m-%d}" if row.past_due_time else "payment overdue"
    await deps.tenants.suspend_for_payment(uow, row.tenant_id, reason)
    fresh = await store.get_subscription(uow.session, row.id)
    assert fresh is not None
    await uow.append_event("subscription.updated", event_body(fresh), tenant_id=row.tenant_id, subject=row.id)
    return True


async def reactivate_if_paid(
    uow: UnitOfWork, deps: Deps, row: store.SubscriptionRow, now: datetime, *, dry_run: bool = False
) -> bool:
    """A suspended subscription with nothing left unpaid is active again."""
    if row.status != rules.SUSPENDED or await store.unpaid_invoices(uow.session, row.tenant_id):
        return False
    if row.provider_status in ("past_due", "unpaid", "paused"):
        return False  # Stripe still wants money: its invoice.paid webhook will say when
    if dry_run:
        return True
    await store.update_subscription(
        uow.session,
        row.id,
        {
            "status": rules.ACTIVE,
            "past_due_time": None,
            "grace_end_time": None,
            "reminders_sent": 0,
            "update_time": now,
        },
    )
    await deps.tenants.reactivate_after_payment(uow, row.tenant_id)
    return True
