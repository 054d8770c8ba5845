"""Paging through a tenant's invoices, newest first, with the house's page tokens."""

from __future__ import annotations

from datetime import datetime

from nexus_server.billing import store
from nexus_server.common import pagination
from nexus_server.db.uow import UnitOfWork


async def invoices(
    uow: UnitOfWork, tenant_id: str, status: str | None, size: int, token: str
) -> tuple[list[store.InvoiceRow], str]:
    query = {"tenant_id": tenant_id, "status": status or ""}
    after = pagination.decode(token, "ListInvoices", query, (datetime, str))
    rows = await store.list_invoices(
        uow.session, tenant_id, status, (after[0], after[1]) if after else None, size + 1
    )
    return pagination.page(rows, size, "ListInvoices", query, lambda r: (r.create_time, r.id))
