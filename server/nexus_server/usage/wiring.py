"""Builds the usage capability: its servicer, the metering layer, the retention sweep."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from nexus_server.app.context import AppContext
from nexus_server.common import periodic
from nexus_server.usage import reports, retention
from nexus_server.usage.metering import Meter
from nexus_server.usage.service import UsageServicer
from nexus_server.usage.terms import TermsSource

log = logging.getLogger("nexus.usage")


@dataclass(frozen=True)
class Built:
    servicer: UsageServicer
    meter: Meter | None


def build(ctx: AppContext, *, terms: TermsSource, live_tenants: reports.LiveTenants) -> Built:
    """`terms` says each tenant's plan quotas and periods (billing's, once it has a catalog);
    `live_tenants` is the tenants capability's list for the platform overview."""
    settings = ctx.settings
    meter = None
    if settings.usage_metering:
        meter = Meter(ctx.db, terms, interval=settings.usage_flush_interval.total_seconds())
        ctx.layers.append(meter)
        ctx.background.append(meter.run)
        ctx.on_stop.append(meter.stop)
    sweep = retention.Sweep(ctx.db, settings.usage_retention)
    ctx.background.append(lambda: periodic.every("usage.retention", 300.0, sweep.step, logger=log))
    return Built(UsageServicer(ctx, terms, live_tenants), meter)
