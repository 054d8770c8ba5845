"""Persistence of rate-limit overrides (SQLAlchemy Core; no rules here)."""

from __future__ import annotations

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from nexus_server.ratelimit.tables import rate_limit_overrides as t


async def all_overrides(session: AsyncSession) -> dict[tuple[str, str], int]:
    rows = await session.execute(select(t.c.kind, t.c.subject, t.c.limit_per_minute))
    return {(r.kind, r.subject): int(r.limit_per_minute) for r in rows}


async def put_override(session: AsyncSession, kind: str, subject: str, per_minute: int) -> None:
    changed = await session.execute(
        update(t).where(t.c.kind == kind, t.c.subject == subject).values(limit_per_minute=per_minute)
    )
    if changed.rowcount == 0:  # type: ignore[attr-defined]
        await session.execute(insert(t).values(kind=kind, subject=subject, limit_per_minute=per_minute))


async def delete_override(session: AsyncSession, kind: str, subject: str) -> None:
    await session.execute(delete(t).where(t.c.kind == kind, t.c.subject == subject))
