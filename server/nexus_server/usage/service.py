"""UsageService: request -> domain -> workflow -> response, nothing else."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TypeVar

from nexus.usage.v1 import usage_service_pb2 as pb
from nexus.usage.v1.usage_service_pb2_grpc import UsageServiceServicer
from nexus_server.app.context import AppContext
from nexus_server.interceptors.call import ServicerContext, current_call
from nexus_server.usage import convert, endpoints, ingest, reports
from nexus_server.usage.terms import TermsSource

MAX_STREAM_SECONDS = 600.0  # the contract's 10 minutes; the client resumes on a new stream
MAX_LISTED_REJECTIONS = 1000
T = TypeVar("T")


class UsageServicer(UsageServiceServicer):
    def __init__(self, ctx: AppContext, terms: TermsSource, live_tenants: reports.LiveTenants):
        self.ctx = ctx
        self.db = ctx.db
        self.terms = terms
        self.live_tenants = live_tenants

    async def RecordUsage(
        self, request: pb.RecordUsageRequest, context: ServicerContext
    ) -> pb.RecordUsageResponse:
        convert.check_batch(request.records)
        tenant_id = current_call().tenant_id
        async with self.db.unit_of_work() as uow:
            outcome = await ingest.record(
                uow, self.terms, tenant_id, convert.items(request.records, uow.clock.now())
            )
        return convert.record_response(outcome)

    async def StreamUsage(
        self, request_iterator: AsyncIterator[pb.StreamUsageRequest], context: ServicerContext
    ) -> pb.StreamUsageResponse:
        tenant_id = current_call().tenant_id
        reply = pb.StreamUsageResponse()
        deadline = asyncio.get_running_loop().time() + MAX_STREAM_SECONDS
        offset = 0
        while True:
            message = await self._next(request_iterator, deadline)
            if message is None:  # the client half-closed, or we end the stream early
                return reply
            convert.check_batch(message.records)
            async with self.db.unit_of_work() as uow:
                items = convert.items(message.records, uow.clock.now(), offset)
                outcome = await ingest.record(uow, self.terms, tenant_id, items)
            offset += len(message.records)
            reply.messages_committed += 1
            reply.accepted += outcome.accepted
            reply.duplicates += outcome.duplicates
            reply.rejected += len(outcome.rejections)
            room = MAX_LISTED_REJECTIONS - len(reply.rejections)
            reply.rejections.extend(convert.rejection(r) for r in outcome.rejections[:room])

    async def _next(self, iterator: AsyncIterator[T], deadline: float) -> T | None:
        """The next message; None at the end of the stream, at a graceful stop or at the
        deadline, whichever comes first (the reply then says how far we committed)."""
        if self.ctx.stopping.is_set():
            return None
        reading = asyncio.ensure_future(anext(iterator, None))
        stopping = asyncio.ensure_future(self.ctx.stopping.wait())
        timeout = max(deadline - asyncio.get_running_loop().time(), 0)
        try:
            await asyncio.wait((reading, stopping), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if not reading.done():
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reading
            return None
        return reading.result()

    async def GetCurrentUsage(
        self, request: pb.GetCurrentUsageRequest, context: ServicerContext
    ) -> pb.GetCurrentUsageResponse:
        async with self.db.unit_of_work(readonly=True) as uow:
            report = await reports.current_usage(uow, self.terms, current_call().tenant_id, request.metrics)
        return convert.current_usage(report)

    async def GetUsageHistory(
        self, request: pb.GetUsageHistoryRequest, context: ServicerContext
    ) -> pb.GetUsageHistoryResponse:
        async with self.db.unit_of_work(readonly=True) as uow:
            report = await reports.history(uow, current_call().tenant_id, request.days, request.metric)
        return convert.history(report)

    async def GetEndpointStats(
        self, request: pb.GetEndpointStatsRequest, context: ServicerContext
    ) -> pb.GetEndpointStatsResponse:
        start, end = convert.window(request)
        async with self.db.unit_of_work(readonly=True) as uow:
            report = await endpoints.endpoint_stats(
                uow, current_call().tenant_id, start, end, request.api_key_id
            )
        return convert.endpoint_stats(report)

    async def CheckQuota(
        self, request: pb.CheckQuotaRequest, context: ServicerContext
    ) -> pb.CheckQuotaResponse:
        async with self.db.unit_of_work(readonly=True) as uow:
            check = await reports.check_quota(
                uow, self.terms, current_call().tenant_id, request.metric, request.quantity
            )
        return convert.quota_check(check)

    async def GetUsageOverview(
        self, request: pb.GetUsageOverviewRequest, context: ServicerContext
    ) -> pb.GetUsageOverviewResponse:
        start, end = convert.window(request)
        async with self.db.unit_of_work(readonly=True) as uow:
            report = await reports.overview(
                uow, self.live_tenants, start, end, request.metric, request.top_tenants_limit
            )
        return convert.overview(report)
