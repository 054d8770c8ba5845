"""What usage offers the others, handed over by app/wiring.py: billing's overage reads."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select

from nexus_server.db.uow import UnitOfWork
from nexus_server.usage.tables import usage_daily


async def used_between(uow: UnitOfWork, tenant_id: str, metric: str, start: datetime, end: datetime) -> int:
    """The metric's total over [start, end), from the daily rollups: exact, because periods
    begin and end at midnight UTC like the days the rollups count."""
    query = select(func.coalesce(func.sum(usage_daily.c.quantity), 0)).where(
        usage_daily.c.tenant_id == tenant_id,
        usage_daily.c.metric == metric,
        usage_daily.c.day >= start,
        usage_daily.c.day < end,
    )
    return int((await uow.session.execute(query)).scalar_one())
