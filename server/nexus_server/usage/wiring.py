"""Builds the usage capability: its servicer, the metering layer, the retention sweep."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from nexus_server.app.context import AppContext
from nexus_server.common import periodic
from nexus_server.usage import reports, retention
from nexus_server.usage.hard_limits import HardLimits
from nexus_server.usage.metering import Meter
from nexus_server.usage.service import UsageServicer
from nexus_server.usage.terms import TermsSource

log = logging.getLogger("nexus.usage")
RELOAD = 300.0  # seconds between full re-reads of the hard limits in force (a safety net)


@dataclass(frozen=True)
class Built:
    servicer: UsageServicer
    meter: Meter | None
    limits: HardLimits


def build(ctx: AppContext, *, terms: TermsSource, live_tenants: reports.LiveTenants) -> Built:
    """`terms` says each tenant's plan quotas and periods (billing's, once it has a catalog);
    `live_tenants` is the tenants capability's list for the platform overview."""
    settings = ctx.settings
    meter = None
    limits = HardLimits(ctx.db, terms, ctx.revocations)
    # First among the capabilities' layers: a call refused for its quota charges no rate limit.
    ctx.layers.insert(0, limits)
    ctx.background.append(limits.run)
    ctx.background.append(lambda: periodic.every("usage.limits.reload", RELOAD, limits.reload, logger=log))
    if settings.usage_metering:
        meter = Meter(
            ctx.db,
            terms,
            interval=settings.usage_flush_interval.total_seconds(),
            on_exhausted=lambda uow, tenant_id: HardLimits.signal(uow, ctx.revocations, tenant_id),
        )
        ctx.layers.append(meter)
        ctx.background.append(meter.run)
        ctx.on_stop.append(meter.stop)
    sweep = retention.Sweep(ctx.db, settings.usage_retention)
    ctx.background.append(lambda: periodic.every("usage.retention", 300.0, sweep.step, logger=log))
    return Built(UsageServicer(ctx, terms, live_tenants), meter, limits)
