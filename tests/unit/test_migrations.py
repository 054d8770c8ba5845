"""Alembic migrations and the tables the code uses must describe the same schema."""

from __future__ import annotations

import importlib
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from nexus_server.db.engine import create_sync
from nexus_server.db.migrate import downgrade, upgrade
from nexus_server.db.schema import metadata

SERVER = Path(__file__).resolve().parents[2] / "server" / "nexus_server"


def _load_all_tables() -> None:
    for tables in sorted(SERVER.rglob("tables.py")):
        module = ".".join(tables.relative_to(SERVER).with_suffix("").parts)
        importlib.import_module(f"nexus_server.{module}")


def test_migrations_create_exactly_the_declared_tables(tmp_path: Path) -> None:
    _load_all_tables()
    url = f"sqlite+aiosqlite:///{tmp_path / 'schema.db'}"
    upgrade(url)
    engine = create_sync(url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    engine.dispose()
    # SQLite cannot tell timezone-aware DateTime apart, so type differences are not compared.
    structural = [d for d in diff if not (isinstance(d, list) and d and d[0][0] == "modify_type")]
    named = [(d[0], getattr(d[1], "name", d[1])) if isinstance(d, tuple) else d for d in structural]
    assert named == [], f"migrations and tables.py disagree: {named}"


def test_migrations_downgrade_to_nothing_and_back(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'roundtrip.db'}"
    upgrade(url)
    downgrade(url, "base")
    upgrade(url)
