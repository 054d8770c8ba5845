"""Alembic environment: runs migrations on the URL that db/migrate.py configured."""

from __future__ import annotations

from alembic import context

from nexus_server.db.engine import create_sync
from nexus_server.db.schema import metadata

config = context.config


def run() -> None:
    engine = create_sync(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            transaction_per_migration=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run()
