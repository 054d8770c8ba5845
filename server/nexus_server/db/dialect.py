"""The one place that picks the dialect's INSERT, for ON CONFLICT clauses and RETURNING.

SQLAlchemy's generic insert has neither; PostgreSQL's and SQLite's (3.35+) have both, with
the same Python surface, so stores write one statement for the two backends.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession


def insert_for(session: AsyncSession) -> Any:
    """`insert` of the session's dialect (typed Any: the two share a shape, not a base)."""
    return pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert


def is_postgres(session: AsyncSession) -> bool:
    """For the few statements that are written per backend (array parameters on PostgreSQL)."""
    return bool(session.get_bind().dialect.name == "postgresql")
