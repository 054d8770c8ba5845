"""Buying credit packages. PurchaseCredits opens a payment with the credits provider (a
Stripe Checkout in `payment` mode, or a Revolut Merchant order) and records the purchase;
the credits land once, when the provider reports the payment succeeded (a webhook, re-read
from the provider), never when the RPC returns. Under the local provider the payment
succeeds at once and the credits land in the RPC's own transaction.

Once: the PURCHASE entry's ledger key is `purchase:<provider session id>`, written under the
balance lock with the purchase marked paid in the same transaction, so however many times
(and however concurrently) a provider reports the payment, one entry is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from nexus_server.billing import ledger, selling, subscriptions
from nexus_server.billing import ledger_store as store
from nexus_server.billing.catalog import CreditPackage
from nexus_server.billing.ports import Deps
from nexus_server.billing.provider import PaymentCheckoutRequest, ProviderCheckout, ProviderError
from nexus_server.common.ids import new_id
from nexus_server.db.uow import UnitOfWork

LOCAL_TTL = timedelta(hours=24)


@dataclass(frozen=True)
class Opened:
    session_id: str
    url: str
    expire_time: datetime
    credits: int


async def purchase(
    uow: UnitOfWork,
    deps: Deps,
    tenant_id: str,
    package: CreditPackage,
    quantity: int,
    success_url: str,
    cancel_url: str,
    key: str,
    actor: str,
) -> Opened:
    request = {"package": package.id, "quantity": quantity, "success": success_url, "cancel": cancel_url}
    acct = await subscriptions.account(uow, deps, tenant_id, lock=True)
    earlier = await selling.remembered(uow, tenant_id, "purchase", key, request)
    if earlier is not None:
        return Opened(
            earlier["id"], earlier["url"], datetime.fromisoformat(earlier["expire_time"]), earlier["credits"]
        )
    now = uow.clock.now()
    credits = package.credits * quantity
    amount = package.price_minor * quantity
    success = success_url or f"{deps.public_url}/console/credits?purchase=success"
    cancel = cancel_url or f"{deps.public_url}/console/credits?purchase=canceled"
    purchase_id = new_id("cpu", at=now)
    provider = deps.credits
    if provider is None:
        opened = Opened(new_id("cs", at=now), success, now + LOCAL_TTL, credits)
        name = "local"
    else:
        emails = await deps.tenants.admin_emails(uow, tenant_id)
        try:
            session = await provider.create_payment_checkout(
                PaymentCheckoutRequest(
                    tenant_id=tenant_id,
                    reference=purchase_id,
                    customer_id=(acct.customer_id or "") if provider.name == "stripe" else "",
                    customer_email=emails[0] if emails else "",
                    description=f"{package.display_name} credits ({package.credits:,}) × {quantity}",
                    amount_minor=amount,
                    currency=deps.catalog.currency,
                    success_url=success,
                    cancel_url=cancel,
                    idempotency_key=f"purchase:{tenant_id}:{key or purchase_id}",
                    metadata={
                        "tenant_id": tenant_id,
                        "credit_package_id": package.id,
                        "quantity": str(quantity),
                        "purchase_id": purchase_id,
                    },
                )
            )
        except ProviderError as error:
            raise selling.provider_failure(error) from error
        opened = Opened(session.id, session.url, session.expire_time, credits)
        name = provider.name
    await store.insert_purchase(
        uow.session,
        {
            "id": purchase_id,
            "tenant_id": tenant_id,
            "provider": name,
            "session_id": opened.session_id,
            "credit_package_id": package.id,
            "quantity": quantity,
            "credits": credits,
            "amount_minor": amount,
            "currency": deps.catalog.currency,
            "status": "open",
            "create_time": now,
            "paid_time": None,
        },
    )
    if provider is None:
        await _credit(uow, deps, name, opened.session_id, actor)
    await selling.remember(
        uow,
        tenant_id,
        "purchase",
        key,
        request,
        {
            "id": opened.session_id,
            "url": opened.url,
            "expire_time": opened.expire_time.isoformat(),
            "credits": credits,
        },
    )
    return opened


CREDITED, ALREADY, UNPAID, UNKNOWN = "credited", "already", "unpaid", "unknown"


async def settle(uow: UnitOfWork, deps: Deps, provider: str, checkout: ProviderCheckout) -> str:
    """Credit a purchase its provider reports paid: CREDITED now, ALREADY before, UNPAID (not
    yet, or not the payment Nexus asked for), or UNKNOWN (no such purchase of Nexus's)."""
    found = await store.purchase_by_session(uow.session, provider, checkout.id)
    if found is None:
        return UNKNOWN
    if checkout.payment_status != "paid" or checkout.status != "complete":
        return UNPAID
    if (
        checkout.amount_total_minor != found.amount_minor
        or (checkout.currency or found.currency) != found.currency
    ):
        return UNPAID  # not the payment Nexus asked for (or the provider did not say): never credit it
    return CREDITED if await _credit(uow, deps, provider, checkout.id, provider) else ALREADY


async def _credit(uow: UnitOfWork, deps: Deps, provider: str, session_id: str, actor: str) -> bool:
    found = await store.purchase_by_session(uow.session, provider, session_id)
    assert found is not None
    balance = await store.lock_balance(uow.session, found.tenant_id, uow.clock.now())
    _, created = await ledger.write(
        uow,
        deps.catalog,
        found.tenant_id,
        ledger.Entry(
            ledger.PURCHASE,
            found.credits,
            f"purchase:{session_id}",
            {"purchase": found.id},
            actor,
            f"{found.credit_package_id} package × {found.quantity}",
            credit_package_id=found.credit_package_id,
            events=("credits.purchased",),
        ),
        locked=balance,
    )
    if created:
        await store.mark_purchase_paid(uow.session, found.id, uow.clock.now())
    return created
