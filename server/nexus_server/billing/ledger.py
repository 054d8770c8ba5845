"""The credit ledger: every change to a tenant's credits is one append-only transaction,
written with the new balance in the same database transaction, under the balance row's lock.

Why it cannot overdraw or count twice (the AI-chat seed's check-then-deduct race, and
Lago's negative wallets, are what this replaces):
- the balance row is locked before anything is read, so concurrent writers of one tenant
  apply one after another, each seeing the balance the previous one left;
- an entry that would take the balance below zero is refused (INSUFFICIENT_CREDITS) and
  nothing is written;
- each entry's idempotency key is unique per tenant and is checked under the same lock, so
  a retry finds the first call's entry (and returns it) instead of writing another.
Keys are namespaced by what made them (`consume:`, `grant:`, `reserve:`, `purchase:`,
`release:`, `commit:`, `monthly:`) so one caller key cannot collide across RPCs; the API
shows the caller's own part.

Reservations take the hold from the balance at once (a RESERVE entry), so the balance is
always what may be spent; a commit gives the hold back and writes the actual cost, in one
transaction, so the balance moves by exactly the cost.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from nexus_server.billing import ledger_store as store
from nexus_server.billing import rules
from nexus_server.billing.catalog import Catalog, CreditRate
from nexus_server.common.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PreconditionViolation,
)
from nexus_server.common.ids import new_id
from nexus_server.db.uow import UnitOfWork

PURCHASE, CONSUME, GRANT, REFUND, EXPIRE, RESERVE, RELEASE = (
    "purchase",
    "consume",
    "grant",
    "refund",
    "expire",
    "reserve",
    "release",
)
HELD, COMMITTED, RELEASED, EXPIRED = "held", "committed", "released", "expired"
DEFAULT_HOLD = timedelta(minutes=15)


@dataclass(frozen=True)
class Usage:
    provider: str
    model: str
    input_tokens: int
    output_tokens: int

    def priced(self, rate: CreditRate) -> dict[str, Any]:
        """The usage as recorded on its transaction, with the rate it was priced at: a later
        rate change never reprices it."""
        return {
            "provider": self.provider,
            "model": self.model,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "input_credits_per_million_tokens": rate.input_per_million,
            "output_credits_per_million_tokens": rate.output_per_million,
        }


@dataclass(frozen=True)
class Entry:
    kind: str
    amount: int  # signed
    key: str  # namespaced
    request: Any  # what the caller asked, for IDEMPOTENCY_KEY_REUSED
    actor: str
    description: str = ""
    metadata: dict[str, Any] | None = None
    model_usage: dict[str, Any] | None = None
    credit_package_id: str | None = None
    reservation_id: str | None = None
    events: tuple[str, ...] = field(default=())


def fingerprint(request: Any) -> str:
    return hashlib.sha256(json.dumps(request, sort_keys=True, default=str).encode()).hexdigest()


def price(catalog: Catalog, usage: Usage) -> tuple[int, CreditRate]:
    rate = catalog.credit_rate(usage.provider, usage.model)
    if rate is None:
        raise InvalidArgument(
            FieldViolation(
                "model_usage.model", f"{usage.provider}/{usage.model} has no rate (see ListCreditRates)"
            ),
            reason="MODEL_NOT_PRICED",
        )
    return rules.credits_for(
        usage.input_tokens, usage.output_tokens, rate.input_per_million, rate.output_per_million
    ), rate


async def write(
    uow: UnitOfWork, catalog: Catalog, tenant_id: str, entry: Entry, *, locked: store.BalanceRow | None = None
) -> tuple[store.TransactionRow, bool]:
    """Append `entry`; (its transaction, whether it was written now). A key seen before
    returns the first transaction when the request matches."""
    now = uow.clock.now()
    balance = locked or await store.lock_balance(uow.session, tenant_id, now)
    digest = fingerprint(entry.request)
    earlier = await store.transaction_by_key(uow.session, tenant_id, entry.key)
    if earlier is not None:
        if earlier.fingerprint != digest:
            raise FailedPrecondition(
                f"idempotency key {shown_key(entry.key)!r} was used with a different request",
                reason="IDEMPOTENCY_KEY_REUSED",
            )
        return earlier, False
    after = balance.balance + entry.amount
    if after < 0:
        raise FailedPrecondition(
            f"the balance is {balance.balance} credits; this needs {-entry.amount}",
            reason="INSUFFICIENT_CREDITS",
            metadata={"balance": str(balance.balance), "required": str(-entry.amount)},
            violations=[
                PreconditionViolation(
                    "INSUFFICIENT_CREDITS",
                    "credits",
                    f"short by {-after} credits (balance {balance.balance})",
                )
            ],
        )
    transaction_id = new_id("txn", at=now)
    step = now
    while balance.last_transaction_id and transaction_id <= balance.last_transaction_id:
        # Ids order the ledger (ListCreditTransactions pages by them): within one millisecond
        # the random part would not, so a later entry takes the next millisecond's id.
        step += timedelta(milliseconds=1)
        transaction_id = new_id("txn", at=step)
    await store.insert_transaction(
        uow.session,
        {
            "id": transaction_id,
            "tenant_id": tenant_id,
            "kind": entry.kind,
            "amount": entry.amount,
            "balance_after": after,
            "idempotency_key": entry.key,
            "fingerprint": digest,
            "description": entry.description,
            "metadata": entry.metadata,
            "model_usage": entry.model_usage,
            "credit_package_id": entry.credit_package_id,
            "reservation_id": entry.reservation_id,
            "actor": entry.actor,
            "create_time": now,
        },
    )
    low = after < catalog.low_balance_threshold
    # A hold given back is not money coming in: it neither re-arms the low-balance event
    # (a commit would otherwise announce the same low balance again) nor fires it.
    sent = balance.low_balance_sent if entry.kind == RELEASE else low
    await store.set_balance(
        uow.session,
        tenant_id,
        {
            "balance": after,
            "last_transaction_id": transaction_id,
            "low_balance_sent": sent,
            "update_time": now,
        },
    )
    written = await store.transaction_by_key(uow.session, tenant_id, entry.key)
    assert written is not None
    for kind in entry.events:
        await uow.append_event(kind, event_body(written), tenant_id=tenant_id, subject=written.id)
    if low and entry.amount < 0 and not balance.low_balance_sent:
        # Once per crossing: the flag stays set until the balance is back at the threshold.
        await uow.append_event(
            "credits.low_balance",
            {"tenant_id": tenant_id, "balance": after, "threshold": catalog.low_balance_threshold},
            tenant_id=tenant_id,
            subject=tenant_id,
        )
    return written, True


def shown_key(key: str) -> str:
    """The caller's own part of a namespaced ledger key."""
    return key.split(":", 1)[1] if ":" in key else key


def event_body(row: store.TransactionRow) -> dict[str, object]:
    return {
        "transaction_id": row.id,
        "tenant_id": row.tenant_id,
        "kind": row.kind,
        "amount": row.amount,
        "balance_after": row.balance_after,
        "idempotency_key": shown_key(row.idempotency_key),
    }


# --- the RPCs' workflows ----------------------------------------------------------------------


async def consume(
    uow: UnitOfWork,
    catalog: Catalog,
    tenant_id: str,
    *,
    amount: int,
    usage: Usage | None,
    key: str,
    description: str,
    metadata: dict[str, Any] | None,
    actor: str,
) -> store.TransactionRow:
    recorded: dict[str, Any] | None = None
    if usage is not None:
        amount, rate = price(catalog, usage)
        recorded = usage.priced(rate)
    # The request as the caller sent it: a rate change between a call and its retry must
    # not make the retry a "different request".
    sent = None if usage is None else [usage.provider, usage.model, usage.input_tokens, usage.output_tokens]
    request = {"amount": None if usage else amount, "usage": sent, "d": description, "m": metadata}
    row, _ = await write(
        uow,
        catalog,
        tenant_id,
        Entry(
            CONSUME,
            -amount,
            f"consume:{key}",
            request,
            actor,
            description,
            metadata,
            recorded,
            events=("credits.consumed",),
        ),
    )
    return row


async def grant(
    uow: UnitOfWork,
    catalog: Catalog,
    tenant_id: str,
    *,
    kind: str,
    amount: int,
    key: str,
    description: str,
    metadata: dict[str, Any] | None,
    actor: str,
) -> store.TransactionRow:
    request = {"kind": kind, "amount": amount, "d": description, "m": metadata}
    entry = Entry(
        kind, amount, f"grant:{key}", request, actor, description, metadata, events=("credits.granted",)
    )
    row, _ = await write(uow, catalog, tenant_id, entry)
    return row


async def balance_of(uow: UnitOfWork, tenant_id: str) -> store.BalanceRow | None:
    return await store.get_balance(uow.session, tenant_id)


async def reserve(
    uow: UnitOfWork,
    catalog: Catalog,
    tenant_id: str,
    *,
    amount: int,
    hold: timedelta,
    key: str,
    description: str,
    actor: str,
) -> store.ReservationRow:
    now = uow.clock.now()
    balance = await store.lock_balance(uow.session, tenant_id, now)
    request = {"amount": amount, "hold": hold.total_seconds(), "d": description}
    reservation_id = new_id("rsv", at=now)
    entry = Entry(
        RESERVE, -amount, f"reserve:{key}", request, actor, description, reservation_id=reservation_id
    )
    row, created = await write(uow, catalog, tenant_id, entry, locked=balance)
    if created:
        await store.insert_reservation(
            uow.session,
            {
                "id": reservation_id,
                "tenant_id": tenant_id,
                "amount": amount,
                "state": HELD,
                "consumed": 0,
                "idempotency_key": key,
                "expire_time": now + hold,
                "create_time": now,
                "settle_time": None,
                "balance_after": row.balance_after,
            },
        )
    assert row.reservation_id is not None
    found = await store.get_reservation(uow.session, tenant_id, row.reservation_id)
    assert found is not None
    return found


def _not_held(row: store.ReservationRow) -> FailedPrecondition:
    return FailedPrecondition(
        f"reservation {row.id} is {row.state}",
        reason="RESERVATION_NOT_HELD",
        metadata={"state": row.state.upper()},
    )


async def _locked_reservation(
    uow: UnitOfWork, tenant_id: str, reservation_id: str
) -> tuple[store.BalanceRow, store.ReservationRow]:
    balance = await store.lock_balance(uow.session, tenant_id, uow.clock.now())
    row = await store.get_reservation(uow.session, tenant_id, reservation_id)
    if row is None:
        raise NotFound(f"reservation {reservation_id} does not exist")
    return balance, row


async def commit(
    uow: UnitOfWork,
    catalog: Catalog,
    tenant_id: str,
    reservation_id: str,
    *,
    amount: int,
    usage: Usage | None,
    actor: str,
) -> store.ReservationRow:
    balance, row = await _locked_reservation(uow, tenant_id, reservation_id)
    recorded: dict[str, Any] | None = None
    if usage is not None and amount == 0:
        amount, rate = price(catalog, usage)
        recorded = usage.priced(rate)
    elif usage is not None:
        known = catalog.credit_rate(usage.provider, usage.model)
        recorded = usage.priced(known) if known is not None else None
    if row.state == COMMITTED and row.consumed == amount:
        return row
    if row.state != HELD:
        raise _not_held(row)
    if amount > row.amount:
        raise InvalidArgument(FieldViolation("amount", f"must be at most the {row.amount} credits held"))
    await _give_back(uow, catalog, row, balance, actor, RELEASE)
    after = row.balance_after
    if amount:
        consumed, _ = await write(
            uow,
            catalog,
            tenant_id,
            Entry(
                CONSUME,
                -amount,
                f"commit:{row.id}",
                {"reservation": row.id, "amount": amount},
                actor,
                f"reservation {row.id}",
                model_usage=recorded,
                reservation_id=row.id,
                events=("credits.consumed",),
            ),
        )
        after = consumed.balance_after
    else:
        fresh = await store.get_balance(uow.session, tenant_id)
        after = fresh.balance if fresh is not None else after
    await store.update_reservation(
        uow.session,
        row.id,
        {"state": COMMITTED, "consumed": amount, "settle_time": uow.clock.now(), "balance_after": after},
    )
    settled = await store.get_reservation(uow.session, tenant_id, row.id)
    assert settled is not None
    return settled


async def release(
    uow: UnitOfWork, catalog: Catalog, tenant_id: str, reservation_id: str, *, actor: str
) -> store.ReservationRow:
    balance, row = await _locked_reservation(uow, tenant_id, reservation_id)
    if row.state == RELEASED:
        return row
    if row.state != HELD:
        raise _not_held(row)
    return await _give_back(uow, catalog, row, balance, actor, RELEASED)


async def _give_back(
    uow: UnitOfWork,
    catalog: Catalog,
    row: store.ReservationRow,
    balance: store.BalanceRow,
    actor: str,
    state: str,
) -> store.ReservationRow:
    """Return a hold to the balance (RELEASE); `state` is what the reservation becomes
    (RELEASE while committing: the commit sets COMMITTED right after)."""
    given, _ = await write(
        uow,
        catalog,
        row.tenant_id,
        Entry(
            RELEASE,
            row.amount,
            f"release:{row.id}",
            {"reservation": row.id},
            actor,
            f"reservation {row.id}",
            reservation_id=row.id,
        ),
        locked=balance,
    )
    if state != RELEASE:
        await store.update_reservation(
            uow.session,
            row.id,
            {"state": state, "settle_time": uow.clock.now(), "balance_after": given.balance_after},
        )
    fresh = await store.get_reservation(uow.session, row.tenant_id, row.id)
    assert fresh is not None
    return fresh


async def expire_one(uow: UnitOfWork, catalog: Catalog, tenant_id: str, reservation_id: str) -> bool:
    """Release a hold past its expiry (the periodic sweep); False if it was settled since."""
    balance, row = await _locked_reservation(uow, tenant_id, reservation_id)
    if row.state != HELD or row.expire_time > uow.clock.now():
        return False
    await _give_back(uow, catalog, row, balance, "system", EXPIRED)
    return True


async def list_page(
    uow: UnitOfWork,
    tenant_id: str,
    *,
    kind: str | None,
    start: datetime | None,
    end: datetime | None,
    before_id: str | None,
    limit: int,
) -> list[store.TransactionRow]:
    return await store.list_transactions(
        uow.session, tenant_id, kind=kind, start=start, end=end, before_id=before_id, limit=limit
    )
