"""`nexus usage current` and `nexus usage import`, for operators.

`import` reads usage records as JSON lines (`{"metric": …, "quantity": …,
"idempotency_key": …, "timestamp": "2026-12-01T10:00:00Z", "properties": {…}}`) and records
them for a tenant in batches of up to 1,000, through the same rules and idempotent write as
RecordUsage. An interrupted import is resumed by running it again: records already stored
have their keys and count as duplicates. Rejected lines go to stderr with their line number.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from nexus_server.app.wiring import UsageTerms
from nexus_server.auth.revocations import Revocations
from nexus_server.billing import catalog as catalogs
from nexus_server.billing.terms import CatalogTerms
from nexus_server.common.errors import NexusError
from nexus_server.config import Settings
from nexus_server.db.engine import create_async
from nexus_server.db.uow import Database
from nexus_server.tenants import ports as tenant_ports
from nexus_server.tenants import store as tenants
from nexus_server.usage import ingest, reports, rules
from nexus_server.usage.terms import TermsSource


def add_arguments(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    usage = sub.add_parser("usage", help="usage records and quotas").add_subparsers(
        dest="usage_command", required=True
    )
    current = usage.add_parser("current", help="a tenant's usage in its current billing period")
    current.add_argument("--tenant", required=True, help="the tenant's id (ten_…) or slug")
    current.add_argument("--json", action="store_true", help="one JSON object per metric instead of a table")
    current.set_defaults(fn=cmd_usage_current)
    load = usage.add_parser("import", help="record usage from a JSON-lines file (resumable)")
    load.add_argument("--tenant", required=True, help="the tenant's id (ten_…) or slug")
    load.add_argument("file", type=Path, help="JSON lines; - for stdin")
    load.add_argument("--batch", type=int, default=rules.MAX_RECORDS, help="records per transaction (1-1000)")
    load.set_defaults(fn=cmd_usage_import)


def _terms(settings: Settings, db: Database) -> TermsSource:
    """The server's own terms: billing's catalog and the tenants' subscriptions."""
    catalog = catalogs.load(settings.plans_file)
    return UsageTerms(CatalogTerms(catalog, Revocations(db), tenant_ports.plan_of))


async def _tenant_id(db: Database, given: str) -> str | None:
    async with db.unit_of_work(readonly=True) as uow:
        row = await tenants.get_tenant(uow.session, given) or await tenants.tenant_by_slug(uow.session, given)
    return row.id if row is not None and row.status != "deleted" else None


async def _current(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    db = Database(create_async(settings.database_url))
    try:
        tenant_id = await _tenant_id(db, args.tenant)
        if tenant_id is None:
            print(f"nexus: no tenant {args.tenant!r}", file=sys.stderr)
            return 1
        async with db.unit_of_work(readonly=True) as uow:
            report = await reports.current_usage(uow, _terms(settings, db), tenant_id, [])
    finally:
        await db.dispose()
    terms = report.terms
    if args.json:
        for m in report.metrics:
            line = {
                "metric": m.metric,
                "used": m.used,
                "included": m.quota.included,
                "remaining": m.remaining,
            }
            print(json.dumps({**line, "overage": m.overage, "projected_used": m.projected_used}), file=out)
        return 0
    table = Table(
        title=f"{tenant_id} on {terms.plan_id}, {terms.period_start:%Y-%m-%d} to {terms.period_end:%Y-%m-%d}"
    )
    for column in ("metric", "used", "included", "remaining", "overage", "projected"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for m in report.metrics:
        unlimited = m.quota.enforcement.name == "UNLIMITED"
        included = "unlimited" if unlimited else f"{m.quota.included:,}"
        table.add_row(
            m.metric, f"{m.used:,}", included, f"{m.remaining:,}", f"{m.overage:,}", f"{m.projected_used:,}"
        )
    Console(file=out).print(table)
    return 0


def cmd_usage_current(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(_current(settings, args, sys.stdout))


def _judge(number: int, line: str, now: datetime) -> ingest.Item:
    """Line `number` (1-based) as a record, or why not; the item's index is the line number."""
    field = f"line {number}"
    try:
        value: Any = json.loads(line)
        if not isinstance(value, dict):
            raise ValueError("not a JSON object")
        when = datetime.fromisoformat(value["timestamp"]) if value.get("timestamp") else None
        if when is not None and when.tzinfo is None:
            raise ValueError("timestamp needs a time zone (…Z)")
        quantity = int(value.get("quantity", 0))
        properties = value.get("properties")
        if properties is not None and not isinstance(properties, dict):
            raise ValueError("properties must be an object")
    except (ValueError, TypeError) as error:
        return ingest.Item(number, rules.Rejection(number, "", "INVALID_REQUEST", f"{field}: {error}"))
    judged = rules.judge(
        number,
        field,
        metric=str(value.get("metric", "")),
        quantity=quantity,
        idempotency_key=str(value.get("idempotency_key", "")),
        time=when,
        properties=properties,
        now=now,
    )
    return ingest.Item(number, judged)


def _lines(source: TextIO) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(source, start=1):
        if line.strip():
            yield number, line


async def _import(settings: Settings, args: argparse.Namespace, err: TextIO) -> int:
    if not 1 <= args.batch <= rules.MAX_RECORDS:
        print(f"nexus: --batch must be from 1 to {rules.MAX_RECORDS}", file=err)
        return 2
    source = sys.stdin if str(args.file) == "-" else args.file.open(encoding="utf-8")
    total_lines = None
    if source is not sys.stdin:
        with args.file.open(encoding="utf-8") as counting:
            total_lines = sum(1 for _ in counting)
    db = Database(create_async(settings.database_url))
    totals = ingest.Outcome()
    try:
        tenant_id = await _tenant_id(db, args.tenant)
        if tenant_id is None:
            print(f"nexus: no tenant {args.tenant!r}", file=err)
            return 1
        terms = _terms(settings, db)
        columns = (TextColumn("importing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=Console(file=err), transient=False) as progress:
            task = progress.add_task("import", total=total_lines)
            pending: list[tuple[int, str]] = []

            async def flush() -> None:
                async with db.unit_of_work() as uow:
                    now = uow.clock.now()
                    outcome = await ingest.record(
                        uow, terms, tenant_id, [_judge(n, t, now) for n, t in pending]
                    )
                totals.accepted += outcome.accepted
                totals.duplicates += outcome.duplicates
                totals.rejections.extend(outcome.rejections)
                progress.update(task, completed=pending[-1][0])
                pending.clear()

            for number, line in _lines(source):  # streamed: files larger than memory are fine
                pending.append((number, line))
                if len(pending) >= args.batch:
                    await flush()
            if pending:
                await flush()
    except NexusError as error:
        print(f"nexus: {error.message}", file=err)
        return 2
    finally:
        if source is not sys.stdin:
            source.close()
        await db.dispose()
    for r in totals.rejections:
        fields = ", ".join(v.field.replace(f"line {r.index}.", "") for v in r.violations)
        print(f"line {r.index}: {r.reason} {r.message}{f' ({fields})' if fields else ''}", file=err)
    print(
        f"{totals.accepted} accepted, {totals.duplicates} duplicates, {len(totals.rejections)} rejected",
        file=err,
    )
    return 1 if totals.rejections else 0


def cmd_usage_import(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(_import(settings, args, sys.stderr))
