"""Builds every capability in dependency order and maps servicers to their services."""

from __future__ import annotations

from nexus_server.apikeys import wiring as apikeys
from nexus_server.app.context import AppContext
from nexus_server.billing import wiring as billing
from nexus_server.events import wiring as events
from nexus_server.identity import wiring as identity
from nexus_server.tenants import wiring as tenants
from nexus_server.usage import wiring as usage

# Identity first (token verifier), then tenants (directory), keys (key verifier and rate
# limits), then the capabilities that only consume those ports.
_ORDER = (
    ("nexus.identity.v1.IdentityService", identity.build),
    ("nexus.tenant.v1.TenantService", tenants.build),
    ("nexus.apikey.v1.ApiKeyService", apikeys.build),
    ("nexus.billing.v1.BillingService", billing.build),
    ("nexus.usage.v1.UsageService", usage.build),
    ("nexus.events.v1.EventsService", events.build),
)


def build_capabilities(ctx: AppContext) -> dict[str, object]:
    servicers: dict[str, object] = {}
    for service, build in _ORDER:
        servicer = build(ctx)
        if servicer is not None:
            servicers[service] = servicer
    return servicers
