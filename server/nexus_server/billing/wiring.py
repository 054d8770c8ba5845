"""Builds the billing capability: the catalog (checked at start), the payment provider, the
servicer, the terms usage reads, the tenant rate limits, and the scheduled billing cycle."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

from nexus_server.app.context import AppContext
from nexus_server.billing import catalog as catalogs
from nexus_server.billing import cycle
from nexus_server.billing.catalog import Catalog
from nexus_server.billing.holds import HOLD_SWEEP_SECONDS, HoldSweep
from nexus_server.billing.ports import Deps, Mail, Tenants, UsedBetween
from nexus_server.billing.provider import CreditsCheckout, PaymentProvider
from nexus_server.billing.seats import SeatSync
from nexus_server.billing.service import BillingServicer
from nexus_server.billing.terms import CatalogTerms, PlanOf
from nexus_server.common import periodic
from nexus_server.common.errors import Aborted

log = logging.getLogger("nexus.billing")


@dataclass(frozen=True)
class Built:
    servicer: BillingServicer
    catalog: Catalog
    terms: CatalogTerms
    deps: Deps
    seat_sync: SeatSync


def load_catalog(ctx: AppContext) -> Catalog:
    """The catalog, read and checked before anything is built (ConfigError stops start-up)."""
    return catalogs.load(ctx.settings.plans_file)


def build(
    ctx: AppContext,
    *,
    catalog: Catalog,
    tenants: Tenants,
    plan_of: PlanOf,
    mail: Mail | None,
    used_between: UsedBetween,
) -> Built:
    """`tenants`: the tenants capability's ForBilling, and `plan_of` its plan ids (for tenants
    billing never touched); `mail`: identity's outbox; `used_between`: usage's daily rollups."""
    settings = ctx.settings
    provider: PaymentProvider | None = None
    if settings.stripe_api_key:
        from nexus_server.billing.stripe_provider import StripeProvider

        provider = StripeProvider(settings.stripe_api_key, api_base=settings.stripe_api_base)
        log.info(
            "billing: Stripe payment provider%s",
            f" at {settings.stripe_api_base}" if settings.stripe_api_base else "",
        )
    else:
        log.info(
            "billing: no NEXUS_STRIPE_API_KEY, so the local payment provider (checkouts complete at once)"
        )
    credits: CreditsCheckout | None = None
    if settings.credits_provider == "stripe":
        credits = provider  # config checked the key is set
    elif settings.credits_provider == "revolut" and settings.revolut_api_key:
        from nexus_server.billing.revolut_provider import RevolutProvider

        credits = RevolutProvider(settings.revolut_api_key, api_base=settings.revolut_api_base)
        log.info("credits: Revolut Merchant at %s", settings.revolut_api_base)
    deps = Deps(
        catalog=catalog,
        provider=provider,
        tenants=tenants,
        mail=mail,
        used_between=used_between,
        grace=settings.dunning_grace,
        public_url=settings.public_url,
        webhook_secrets=settings.stripe_webhook_secrets,
        credits=credits,
        revolut_webhook_secrets=settings.revolut_webhook_secrets,
    )
    public_host = (urlsplit(settings.public_url).hostname or "").lower()
    hosts = tuple(h for h in (public_host, *settings.billing_redirect_hosts) if h)
    interval = settings.billing_cycle_interval.total_seconds()
    if interval > 0:

        async def scheduled() -> None:
            try:
                await cycle.run(ctx.db, deps, ctx.clock.now())
            except Aborted:
                log.debug("billing cycle: another replica's run is under way")

        ctx.background.append(lambda: periodic.every("billing.cycle", interval, scheduled, logger=log))
    sweep = HoldSweep(ctx.db, catalog)
    ctx.background.append(lambda: periodic.every("credits.holds", HOLD_SWEEP_SECONDS, sweep.step, logger=log))
    seat_sync = SeatSync(ctx.db, deps, ctx.revocations)
    ctx.background.append(seat_sync.run)
    terms = CatalogTerms(catalog, ctx.revocations, plan_of)
    return Built(BillingServicer(ctx, deps, hosts), catalog, terms, deps, seat_sync)
