"""The one place capabilities are connected: each is built with the ports it needs, as
typed arguments, in the order this function states.

Identity comes first (the token verifier and the mail outbox); tenants get identity's outbox
for invitations, and give identity the project grants its tokens carry; API keys bring the key
verifier and the rate-limit layer (billing's plan limits plug in there once billing is built);
usage meters every call (its layer runs after the rate limit) with quotas from the tenant's
plan; events come last, since they only consume. Nothing is shared by string key.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nexus_server.apikeys import wiring as apikeys
from nexus_server.apikeys.verifier import KeyVerifier
from nexus_server.app.context import AppContext
from nexus_server.billing import wiring as billing
from nexus_server.events import wiring as events
from nexus_server.events.appender import Appender
from nexus_server.events.hub import Hub
from nexus_server.identity import wiring as identity
from nexus_server.identity.deps import Identity
from nexus_server.identity.ports import People
from nexus_server.ratelimit.limiter import Limiter
from nexus_server.tenants import ports as tenant_ports
from nexus_server.tenants import wiring as tenants
from nexus_server.usage import wiring as usage
from nexus_server.usage.terms import BuiltInTerms


@dataclass(frozen=True)
class Capabilities:
    """What the capabilities built: their servicers by service name, and the handles the
    server, the command line and tests drive directly."""

    identity: Identity
    key_verifier: KeyVerifier
    limiter: Limiter
    event_hub: Hub
    event_appender: Appender
    servicers: dict[str, object] = field(default_factory=dict)


def build_capabilities(ctx: AppContext) -> Capabilities:
    ident = identity.build(ctx)
    ten = tenants.build(
        ctx, mail=ident.deps.mailer.queue, revoke_keys=apikeys.revoke_tenant_keys, people=People()
    )
    ident.deps.project_grants = ten.project_grants
    ident.deps.standings = tenant_ports.Standings()
    keys = apikeys.build(ctx, plan_of=tenant_ports.plan_of)
    bill = billing.build(ctx)
    # Usage reads quotas from the built-in plans until billing publishes its catalog.
    plans = tenant_ports.CachedPlans(ctx.revocations)
    use = usage.build(ctx, terms=BuiltInTerms(plans.plan_of), live_tenants=tenant_ports.live_tenants)
    evs = events.build(ctx)
    servicers: dict[str, object] = {
        "nexus.identity.v1.IdentityService": ident.servicer,
        "nexus.tenant.v1.TenantService": ten.servicer,
        "nexus.apikey.v1.ApiKeyService": keys.servicer,
        "nexus.events.v1.EventsService": evs.servicer,
        "nexus.usage.v1.UsageService": use.servicer,
    }
    # Not built yet: every RPC of theirs answers UNIMPLEMENTED naming itself.
    if bill is not None:
        servicers["nexus.billing.v1.BillingService"] = bill
    return Capabilities(ident.deps, keys.verifier, keys.limiter, evs.hub, evs.appender, servicers)
