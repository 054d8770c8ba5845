"""`nexus admin create` and `nexus keys rotate`: the identity commands for operators."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys

from prometheus_client import CollectorRegistry

from nexus_server.app.context import AppContext
from nexus_server.auth.revocations import Revocations
from nexus_server.common.clock import SystemClock
from nexus_server.common.errors import NexusError
from nexus_server.config import Settings
from nexus_server.db.engine import create_async
from nexus_server.db.uow import Database
from nexus_server.identity import admin, keys
from nexus_server.identity.wiring import build_identity


def add_arguments(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    admins = sub.add_parser("admin", help="platform administrators").add_subparsers(
        dest="admin_command", required=True
    )
    create = admins.add_parser(
        "create",
        help="create the first platform administrator (or promote an account); the password "
        "comes from NEXUS_ADMIN_PASSWORD or a prompt",
    )
    create.add_argument("email")
    create.add_argument("--display-name", default="")
    create.set_defaults(fn=cmd_admin_create)
    signing = sub.add_parser("keys", help="access-token signing keys").add_subparsers(
        dest="keys_command", required=True
    )
    signing.add_parser(
        "rotate",
        help="publish a new signing key now; it signs after the JWKS cache time, and the old "
        "key stays published until its last token expires",
    ).set_defaults(fn=cmd_keys_rotate)


def _context(settings: Settings) -> AppContext:
    clock = SystemClock()
    db = Database(create_async(settings.database_url), clock)
    return AppContext(settings, db, clock, CollectorRegistry(), Revocations(db))


async def _admin_create(settings: Settings, email: str, password: str, display_name: str) -> int:
    ctx = _context(settings)
    deps = build_identity(ctx)
    try:
        user_id, created = await admin.create_admin(
            deps, email=email, password=password, display_name=display_name
        )
    except NexusError as error:
        print(f"nexus: {error.message}", file=sys.stderr)
        return 2
    finally:
        deps.hasher.close()
        await ctx.db.dispose()
    print(
        f"{'created' if created else 'promoted'} platform administrator {user_id} <{email.strip().lower()}>"
    )
    return 0


def cmd_admin_create(settings: Settings, args: argparse.Namespace) -> int:
    password = os.environ.get("NEXUS_ADMIN_PASSWORD") or ""
    if not password and sys.stdin.isatty():
        password = getpass.getpass("password for the new administrator: ")
    return asyncio.run(_admin_create(settings, args.email, password, args.display_name))


async def _rotate(settings: Settings) -> int:
    ctx = _context(settings)
    deps = build_identity(ctx)
    try:
        async with ctx.db.unit_of_work() as uow:
            kid = await keys.rotate(
                uow,
                deps.keys.sealer,
                publish_ahead=settings.jwks_cache_ttl,
                token_ttl=settings.access_token_ttl,
            )
            activate = uow.clock.now() + settings.jwks_cache_ttl
    finally:
        deps.hasher.close()
        await ctx.db.dispose()
    print(f"published signing key {kid}; it signs from {activate.isoformat()}")
    return 0


def cmd_keys_rotate(settings: Settings, _args: argparse.Namespace) -> int:
    return asyncio.run(_rotate(settings))
