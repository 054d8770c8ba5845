"""The one place that picks the dialect's INSERT, for ON CONFLICT clauses and RETURNING.

SQLAlchemy's generic insert has neither; PostgreSQL's and SQLite's (3.35+) have both, with
the same Python surface, so stores write one statement for the two backends.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import ColumnElement, any_, bindparam
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession


def insert_for(session: AsyncSession) -> Any:
    """`insert` of the session's dialect (typed Any: the two share a shape, not a base)."""
    return pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert


def is_postgres(session: AsyncSession) -> bool:
    """For the few statements that are written per backend (array parameters on PostgreSQL)."""
    return bool(session.get_bind().dialect.name == "postgresql")


def one_of(session: AsyncSession, column: ColumnElement[Any], values: Iterable[Any]) -> ColumnElement[bool]:
    """`column IN (values)`, as `column = ANY(:array)` on PostgreSQL.

    An IN list is one bound parameter per value, each rendered by SQLAlchemy and bound by
    psycopg on every execution: a 500-id status read took ~4-6 ms of the loop's CPU that
    way, and ~1.5 ms as one array parameter (issue 18). SQLite has no arrays; its IN list
    stays, within the stores' chunks (its bound-parameter limit).
    """
    if is_postgres(session):
        return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))
    return column.in_(list(values))
