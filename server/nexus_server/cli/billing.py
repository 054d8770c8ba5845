"""`nexus billing sync` and `nexus billing run-cycle`, for operators.

`sync` makes Stripe's products and prices match the plan catalog (idempotent: run it after
every catalog change, before selling). `run-cycle` runs the billing cycle as RunBillingCycle
does, with a progress bar, on this machine's configuration; a run already under way on any
replica makes it exit with status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from typing import TextIO

from prometheus_client import CollectorRegistry
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from nexus_server.app.context import AppContext
from nexus_server.app.wiring import build_capabilities
from nexus_server.auth.revocations import Revocations
from nexus_server.billing import cycle, store
from nexus_server.billing.provider import ProviderError
from nexus_server.billing.sync import prices_of
from nexus_server.common.clock import SystemClock
from nexus_server.common.errors import Aborted
from nexus_server.common.ids import is_id
from nexus_server.config import Settings
from nexus_server.db.engine import create_async
from nexus_server.db.uow import Database


def add_arguments(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    billing = sub.add_parser(
        "billing", help="the payment provider's catalog and the billing cycle"
    ).add_subparsers(dest="billing_command", required=True)
    billing.add_parser("sync", help="make Stripe's products and prices match the plan catalog").set_defaults(
        fn=cmd_billing_sync
    )
    run = billing.add_parser("run-cycle", help="bill ended periods' overage, renew, run dunning")
    run.add_argument("--as-of", help="ISO 8601 moment to run as of (default: now; not in the future)")
    run.add_argument("--dry-run", action="store_true", help="change nothing; show what a run would do")
    run.add_argument("--tenant", action="append", default=[], help="only this tenant (ten_…); repeatable")
    run.set_defaults(fn=cmd_billing_run_cycle)


def _context(settings: Settings) -> AppContext:
    clock = SystemClock()
    db = Database(create_async(settings.database_url), clock)
    return AppContext(settings, db, clock, CollectorRegistry(), Revocations(db))


async def _sync(settings: Settings, out: TextIO) -> int:
    ctx = _context(settings)
    try:
        deps = build_capabilities(ctx).billing
        if deps.provider is None:
            print("nexus: no NEXUS_STRIPE_API_KEY: the local payment provider has nothing to sync", file=out)
            return 0
        try:
            report = await deps.provider.sync_catalog(prices_of(deps.catalog))
        except ProviderError as error:
            print(f"nexus: Stripe: {error}", file=sys.stderr)
            return 1
    finally:
        await ctx.db.dispose()
    for word, keys in (
        ("created", report.created),
        ("updated", report.updated),
        ("unchanged", report.unchanged),
    ):
        for key in keys:
            print(f"{word:9} {key}", file=out)
    return 0


def cmd_billing_sync(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(_sync(settings, sys.stdout))


async def _run_cycle(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    now = datetime.now(UTC)
    as_of = now
    if args.as_of:
        try:
            as_of = datetime.fromisoformat(args.as_of.replace("Z", "+00:00"))
        except ValueError:
            print(f"nexus: --as-of {args.as_of!r} is not an ISO 8601 time", file=sys.stderr)
            return 1
        if as_of.tzinfo is None or as_of > now:
            print("nexus: --as-of needs a time zone and must not be in the future", file=sys.stderr)
            return 1
    bad = [t for t in args.tenant if not is_id(t, "ten")]
    if bad:
        print(f"nexus: not a tenant id: {bad[0]!r}", file=sys.stderr)
        return 1
    ctx = _context(settings)
    try:
        deps = build_capabilities(ctx).billing
        async with ctx.db.unit_of_work(readonly=True) as uow:
            total = len(await store.current_subscriptions(uow.session, args.tenant, limit=1_000_000))
        console = Console(file=out, width=None if out.isatty() else 120)  # logs and pipes: no wrapping
        columns = (TextColumn("billing cycle"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task("tenants", total=total)
            try:
                report = await cycle.run(
                    ctx.db,
                    deps,
                    as_of,
                    dry_run=args.dry_run,
                    tenant_ids=args.tenant,
                    progress=lambda n: progress.advance(task, n),
                )
            except Aborted as error:
                print(f"nexus: {error}", file=sys.stderr)
                return 2
    finally:
        await ctx.db.dispose()
    table = Table(
        title=f"billing cycle as of {as_of:%Y-%m-%d %H:%M} UTC{' (dry run)' if args.dry_run else ''}"
    )
    for column in ("tenant", "what", "detail"):
        table.add_column(column)
    for charge in report.charges:
        cents = charge.amount_minor
        table.add_row(
            charge.tenant_id,
            "overage",
            f"{charge.metric} {charge.overage:,} = {cents // 100}.{cents % 100:02d}",
        )
    for action in report.actions:
        table.add_row(action.tenant_id, action.kind, action.detail)
    for tenant_id, _, message in report.failures:
        table.add_row(tenant_id, "failed", message)
    console.print(table)
    console.print(
        f"{report.examined} subscriptions examined, {len(report.charges)} overage charges, "
        f"{report.already_billed} already billed, {report.renewed} periods renewed, "
        f"{len(report.failures)} failures"
    )
    return 1 if report.failures else 0


def cmd_billing_run_cycle(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(_run_cycle(settings, args, sys.stdout))
