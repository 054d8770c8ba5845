"""The `nexus` command. Each module here holds one family of its subcommands and registers
them with `add_arguments`: server.py (serve, migrate, dev), events.py (events tail),
identity.py (admin create, keys rotate), apikeys.py (apikey issue), usage.py (usage current,
usage import), billing.py (billing sync, billing run-cycle), credits.py (credits audit),
webhooks.py (webhooks listen)."""

from __future__ import annotations

import argparse
import os
import sys

from nexus_server import logs
from nexus_server.config import ConfigError, Settings, load_settings


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as error:
        sys.exit(f"nexus: configuration error: {error}")


def main(argv: list[str] | None = None) -> int:
    from nexus_server.cli import apikeys, billing, credits, events, identity, server, usage, webhooks

    parser = argparse.ArgumentParser(
        prog="nexus", description="Nexus identity/keys/tenants/billing/usage/events hub"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for commands in (server, events, identity, apikeys, usage, billing, credits, webhooks):
        commands.add_arguments(sub)
    args = parser.parse_args(argv)
    # Whatever the server writes (database, mail sink, rendered configs) is for this account
    # alone; the explicit modes in common/private_files.py hold even without this.
    os.umask(0o077)
    settings = _settings()
    logs.configure(settings.log_level)
    return int(args.fn(settings, args))
