"""The one place capabilities are connected: each is built with the ports it needs, as
typed arguments, in the order this function states.

Identity comes first (the token verifier and the mail outbox); tenants get identity's outbox
for invitations, and give identity the project grants its tokens carry; API keys bring the key
verifier and the rate-limit layer, whose tenant limits come from billing's plan catalog;
billing sells the plans, drives tenants' plan and suspension through tenants' ForBilling and
reads usage's rollups; usage meters every call (its layer runs after the rate limit) with the
quotas and periods billing's terms say; events come last, since they only consume (their
webhook sender mails a tenant's admins through identity's outbox when it disables an endpoint). Nothing is
shared by string key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from nexus_server.apikeys import wiring as apikeys
from nexus_server.apikeys.verifier import KeyVerifier
from nexus_server.app.context import AppContext
from nexus_server.billing import wiring as billing
from nexus_server.billing.ports import Deps as BillingDeps
from nexus_server.billing.terms import CatalogTerms
from nexus_server.db.uow import UnitOfWork
from nexus_server.events import wiring as events
from nexus_server.events.appender import Appender
from nexus_server.events.hub import Hub
from nexus_server.events.webhooks.worker import Deliverer
from nexus_server.identity import wiring as identity
from nexus_server.identity.deps import Identity
from nexus_server.identity.ports import People
from nexus_server.ratelimit.limiter import Limiter
from nexus_server.tenants import ports as tenant_ports
from nexus_server.tenants import wiring as tenants
from nexus_server.usage import ports as usage_ports
from nexus_server.usage import wiring as usage
from nexus_server.usage.terms import Quota, Terms, usage_quota


@dataclass(frozen=True)
class Capabilities:
    """What the capabilities built: their servicers by service name, and the handles the
    server, the command line and tests drive directly."""

    identity: Identity
    key_verifier: KeyVerifier
    limiter: Limiter
    event_hub: Hub
    event_appender: Appender
    billing: BillingDeps
    webhooks: Deliverer
    servicers: dict[str, object] = field(default_factory=dict)


def build_capabilities(ctx: AppContext) -> Capabilities:
    ident = identity.build(ctx)
    ten = tenants.build(
        ctx, mail=ident.deps.mailer.queue, revoke_keys=apikeys.revoke_tenant_keys, people=People()
    )
    ident.deps.project_grants = ten.project_grants
    ident.deps.standings = tenant_ports.Standings()
    catalog = billing.load_catalog(ctx)
    keys = apikeys.build(ctx, plan_of=tenant_ports.plan_of, plan_limit=lambda: catalog.tenant_rate_limit)
    bill = billing.build(
        ctx,
        catalog=catalog,
        tenants=tenant_ports.ForBilling(ctx.revocations, People()),
        plan_of=tenant_ports.CachedPlans(ctx.revocations).plan_of,
        mail=ident.deps.mailer.queue,
        used_between=usage_ports.used_between,
    )
    use = usage.build(ctx, terms=UsageTerms(bill.terms), live_tenants=tenant_ports.live_tenants)
    evs = events.build(ctx, mail=ident.deps.mailer.queue, admins=tenant_ports.AdminEmails(People()))
    servicers: dict[str, object] = {
        "nexus.identity.v1.IdentityService": ident.servicer,
        "nexus.tenant.v1.TenantService": ten.servicer,
        "nexus.apikey.v1.ApiKeyService": keys.servicer,
        "nexus.events.v1.EventsService": evs.servicer,
        "nexus.usage.v1.UsageService": use.servicer,
        "nexus.billing.v1.BillingService": bill.servicer,
    }
    return Capabilities(
        ident.deps, keys.verifier, keys.limiter, evs.hub, evs.appender, bill.deps, evs.webhooks, servicers
    )


class UsageTerms:
    """Billing's terms in usage's words: usage knows quotas and periods, not plans' prices."""

    def __init__(self, source: CatalogTerms):
        self.source = source
        self._quotas: dict[str, dict[str, Quota]] = {}

    async def terms(self, uow: UnitOfWork, tenant_id: str, at: datetime) -> Terms:
        found = await self.source.terms(uow, tenant_id, at)
        quotas = self._quotas.get(found.plan_id)
        if quotas is None:
            quotas = {
                q.metric: usage_quota(q.metric, q.included, q.unlimited, q.overage_unit_price)
                for q in found.quotas
            }
            self._quotas[found.plan_id] = quotas
        return Terms(found.plan_id, found.period_start, found.period_end, found.currency, quotas)
