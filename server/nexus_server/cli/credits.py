"""`nexus credits audit`: recompute every tenant's credit balance from its ledger and report
any difference (or a balance below zero); exit status 1 when there is one, so a scheduler
or a deploy check can alert on it."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TextIO

from nexus_server.billing import ledger_store
from nexus_server.config import Settings
from nexus_server.db.engine import create_async
from nexus_server.db.uow import Database


def add_arguments(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    credits = sub.add_parser("credits", help="prepaid credits").add_subparsers(
        dest="credits_command", required=True
    )
    credits.add_parser(
        "audit", help="recompute every balance from the ledger; exit 1 on any difference"
    ).set_defaults(fn=cmd_credits_audit)


async def _audit(settings: Settings, out: TextIO) -> int:
    db = Database(create_async(settings.database_url))
    try:
        async with db.unit_of_work(readonly=True) as uow:
            wrong = await ledger_store.ledger_disagreements(uow.session)
            checked = await ledger_store.count_balances(uow.session)
    finally:
        await db.dispose()
    for tenant_id, balance, total in wrong:
        print(f"{tenant_id}: balance {balance}, ledger sum {total} (difference {balance - total})", file=out)
    print(f"{checked} balances checked, {len(wrong)} disagree with their ledger", file=out)
    return 1 if wrong else 0


def cmd_credits_audit(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(_audit(settings, sys.stdout))
