"""`nexus apikey issue`, for operators bootstrapping a sub-project's key without a person's
token. The full key goes to stdout, once; the record goes to stderr, so
`KEY=$(nexus apikey issue …)` captures only the key."""

from __future__ import annotations

import argparse
import asyncio
import sys

from nexus_server.apikeys import rules
from nexus_server.apikeys.workflows import issue_key
from nexus_server.common.errors import NexusError
from nexus_server.config import Settings
from nexus_server.db.engine import create_async
from nexus_server.db.uow import Database
from nexus_server.tenants import store as tenants


def add_arguments(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    keys = sub.add_parser("apikey", help="API keys").add_subparsers(dest="apikey_command", required=True)
    issue = keys.add_parser("issue", help="issue an API key for a tenant; prints the full key once")
    issue.add_argument("--tenant", required=True, help="the tenant's id (ten_…) or slug")
    issue.add_argument(
        "--scopes", required=True, help="comma-separated, e.g. events:publish,usage:write or *"
    )
    issue.add_argument("--name", required=True)
    issue.add_argument("--environment", choices=("test", "live"), default="live")
    issue.add_argument("--rate-limit", type=int, default=rules.DEFAULT_RATE_LIMIT, help="calls per minute")
    issue.set_defaults(fn=cmd_apikey_issue)


async def _issue(settings: Settings, args: argparse.Namespace) -> int:
    db = Database(create_async(settings.database_url))
    try:
        async with db.unit_of_work() as uow:
            tenant = await tenants.get_tenant(uow.session, args.tenant) or await tenants.tenant_by_slug(
                uow.session, args.tenant
            )
            if tenant is None or tenant.status == "deleted":
                print(f"nexus: no tenant {args.tenant!r}", file=sys.stderr)
                return 1
            row, full_key = await issue_key(
                uow,
                tenant_id=tenant.id,
                name=args.name,
                scopes=[s.strip() for s in args.scopes.split(",") if s.strip()],
                environment=args.environment,
                rate_limit_per_minute=args.rate_limit,
            )
    except NexusError as error:
        print(f"nexus: {error.message}", file=sys.stderr)
        return 2
    finally:
        await db.dispose()
    print(
        f"issued {row.id} for tenant {tenant.slug} ({tenant.id}), scopes {','.join(row.scopes)}",
        file=sys.stderr,
    )
    print(full_key)
    return 0


def cmd_apikey_issue(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(_issue(settings, args))
