"""BillingService: request -> domain -> workflow -> response, nothing else. The credit RPCs
are in credit_rpcs.py, mixed in."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

from google.api import httpbody_pb2

from nexus.billing.v1 import add_on_pb2, revenue_pb2, subscription_pb2
from nexus.billing.v1 import billing_service_pb2 as pb
from nexus.billing.v1.billing_service_pb2_grpc import BillingServiceServicer
from nexus_server.app.context import AppContext
from nexus_server.billing import add_ons, convert, cycle, revenue, rules, selling, subscriptions, webhooks
from nexus_server.billing import listing as lists
from nexus_server.billing.credit_rpcs import CreditRpcs
from nexus_server.billing.ports import Deps
from nexus_server.billing.provider import ProviderError
from nexus_server.billing.stripe_webhook import NotAnEvent, SignatureInvalid, verified_event
from nexus_server.common import pagination
from nexus_server.common.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NexusError,
    Unauthenticated,
    Unavailable,
)
from nexus_server.common.ids import is_id
from nexus_server.common.timestamps import to_datetime
from nexus_server.common.validation import Violations
from nexus_server.interceptors.call import ServicerContext, current_call

MAX_TENANT_IDS = 1000
# Under Envoy's 30 s route timeout: a slow apply answers UNAVAILABLE (and rolls back) so
# that Stripe retries it, rather than Envoy cutting the call off mid-transaction.
WEBHOOK_APPLY_SECONDS = 20.0
log = logging.getLogger("nexus.billing")


class BillingServicer(CreditRpcs, BillingServiceServicer):
    def __init__(self, ctx: AppContext, deps: Deps, redirect_hosts: tuple[str, ...]):
        self.ctx = ctx
        self.db = ctx.db
        self.deps = deps
        self.redirect_hosts = redirect_hosts

    async def ListPlans(self, request: pb.ListPlansRequest, context: ServicerContext) -> pb.ListPlansResponse:
        catalog = self.deps.catalog
        plans, token = pagination.page_of(
            "ListPlans", catalog.plans, request.page_size, request.page_token, ""
        )
        return pb.ListPlansResponse(plans=[convert.plan(p, catalog) for p in plans], next_page_token=token)

    async def GetSubscription(
        self, request: pb.GetSubscriptionRequest, context: ServicerContext
    ) -> subscription_pb2.Subscription:
        tenant_id = current_call().tenant_id
        async with self.db.unit_of_work() as uow:
            row = await subscriptions.current(uow, self.deps, tenant_id)
            acct = await subscriptions.account(uow, self.deps, tenant_id)
        return convert.subscription(row, acct.customer_id)

    async def CreateCheckoutSession(
        self, request: pb.CreateCheckoutSessionRequest, context: ServicerContext
    ) -> pb.CreateCheckoutSessionResponse:
        with Violations() as bad:
            plan = selling.paid_plan(self.deps, request.plan_id, "plan_id", bad)
            selling.seats_in_range(request.seats, "seats", bad)
            selling.redirect_url(request.success_url, "success_url", self.redirect_hosts, bad)
            selling.redirect_url(request.cancel_url, "cancel_url", self.redirect_hosts, bad)
            rules.idempotency_key(request.idempotency_key, "idempotency_key", bad, required=False)
        plan = selling.self_serve(plan, request.plan_id)
        async with self.db.unit_of_work() as uow:
            session = await selling.checkout(
                uow,
                self.deps,
                current_call().tenant_id,
                plan,
                request.seats,
                request.success_url,
                request.cancel_url,
                request.idempotency_key,
            )
        reply = pb.CreateCheckoutSessionResponse(checkout_session_id=session.session_id, url=session.url)
        reply.expire_time.FromDatetime(session.expire_time)
        return reply

    async def CreatePortalSession(
        self, request: pb.CreatePortalSessionRequest, context: ServicerContext
    ) -> pb.CreatePortalSessionResponse:
        with Violations() as bad:
            selling.redirect_url(request.return_url, "return_url", self.redirect_hosts, bad)
        async with self.db.unit_of_work() as uow:
            session_id, url = await selling.portal(
                uow, self.deps, current_call().tenant_id, request.return_url
            )
        return pb.CreatePortalSessionResponse(portal_session_id=session_id, url=url)

    async def ChangePlan(
        self, request: pb.ChangePlanRequest, context: ServicerContext
    ) -> subscription_pb2.Subscription:
        with Violations() as bad:
            plan = selling.paid_plan(self.deps, request.plan_id, "plan_id", bad)
            selling.seats_in_range(request.seats, "seats", bad)
            rules.idempotency_key(request.idempotency_key, "idempotency_key", bad, required=False)
        plan = selling.self_serve(plan, request.plan_id)
        tenant_id = current_call().tenant_id
        async with self.db.unit_of_work() as uow:
            row = await selling.change_plan(
                uow, self.deps, tenant_id, plan, request.seats, request.at_period_end, request.idempotency_key
            )
            acct = await subscriptions.account(uow, self.deps, tenant_id)
        return convert.subscription(row, acct.customer_id)

    async def CancelSubscription(
        self, request: pb.CancelSubscriptionRequest, context: ServicerContext
    ) -> subscription_pb2.Subscription:
        if len(request.reason) > 1000:
            raise InvalidArgument(FieldViolation("reason", "must be at most 1,000 characters"))
        tenant_id = current_call().tenant_id
        async with self.db.unit_of_work() as uow:
            row = await selling.cancel(uow, self.deps, tenant_id, request.immediately, request.reason)
            acct = await subscriptions.account(uow, self.deps, tenant_id)
        return convert.subscription(row, acct.customer_id)

    async def ResumeSubscription(
        self, request: pb.ResumeSubscriptionRequest, context: ServicerContext
    ) -> subscription_pb2.Subscription:
        tenant_id = current_call().tenant_id
        async with self.db.unit_of_work() as uow:
            row = await selling.resume(uow, self.deps, tenant_id)
            acct = await subscriptions.account(uow, self.deps, tenant_id)
        return convert.subscription(row, acct.customer_id)

    async def ListInvoices(
        self, request: pb.ListInvoicesRequest, context: ServicerContext
    ) -> pb.ListInvoicesResponse:
        with Violations() as bad:
            size = pagination.page_size(request.page_size, bad)
            if request.status and request.status not in convert.INVOICE_STATUS_NAMES:
                bad.add("status", "is not an InvoiceStatus")
        tenant_id = current_call().tenant_id
        status = convert.INVOICE_STATUS_NAMES.get(request.status) if request.status else None
        async with self.db.unit_of_work() as uow:
            await subscriptions.account(uow, self.deps, tenant_id)
            rows, token = await lists.invoices(uow, tenant_id, status, size, request.page_token)
        return pb.ListInvoicesResponse(invoices=[convert.invoice(r) for r in rows], next_page_token=token)

    async def HandleStripeWebhook(
        self, request: httpbody_pb2.HttpBody, context: ServicerContext
    ) -> pb.HandleStripeWebhookResponse:
        if not self.deps.webhook_secrets or self.deps.provider is None:
            raise FailedPrecondition(
                "no Stripe webhook signing secret and API key are configured", reason="STRIPE_NOT_CONFIGURED"
            )
        header = current_call().metadata.get("stripe-signature", "")
        try:
            event = verified_event(request.data, header, self.deps.webhook_secrets)
        except SignatureInvalid as error:
            raise Unauthenticated(str(error), reason="STRIPE_SIGNATURE_INVALID") from error
        except NotAnEvent as error:
            raise InvalidArgument(FieldViolation("data", str(error))) from error
        try:
            outcome = await asyncio.wait_for(self._apply(event), WEBHOOK_APPLY_SECONDS)
        except ProviderError as error:
            raise Unavailable(
                f"could not re-read the event's object from Stripe ({error}); Stripe will retry",
                reason="PAYMENT_PROVIDER_UNAVAILABLE",
            ) from error
        except TimeoutError as error:
            raise Unavailable("applying the event took too long; Stripe will retry") from error
        except NexusError:
            raise
        except Exception as error:
            # Nothing was applied (the claim rolled back with the rest); a retry may succeed,
            # and Stripe retries anything but a 2xx. Logged with its stack: it may be a bug.
            log.exception("Stripe event %s could not be applied", event.get("id"))
            raise Unavailable("the event could not be applied now; Stripe will retry") from error
        return pb.HandleStripeWebhookResponse(
            stripe_event_id=outcome.event_id,
            stripe_event_type=outcome.event_type,
            outcome=_OUTCOME[outcome.outcome],
        )

    async def _apply(self, event: dict[str, Any]) -> webhooks.Outcome:
        async with self.db.unit_of_work() as uow:
            return await webhooks.apply_event(uow, self.deps, event)

    async def RunBillingCycle(
        self, request: pb.RunBillingCycleRequest, context: ServicerContext
    ) -> pb.RunBillingCycleResponse:
        now = self.ctx.clock.now()
        with Violations() as bad:
            as_of = now
            if request.HasField("as_of_time"):
                as_of = to_datetime(request.as_of_time, "as_of_time", bad)
                if as_of > now:
                    bad.add("as_of_time", "must not be in the future")
            if len(request.tenant_ids) > MAX_TENANT_IDS:
                bad.add("tenant_ids", f"must hold at most {MAX_TENANT_IDS} ids")
            for i, tenant_id in enumerate(request.tenant_ids[:MAX_TENANT_IDS]):
                if not is_id(tenant_id, "ten"):
                    bad.add(f"tenant_ids[{i}]", "must be a tenant id (ten_…)")
        report = await cycle.run(
            self.db, self.deps, as_of, dry_run=request.dry_run, tenant_ids=list(request.tenant_ids)
        )
        return convert.cycle_report(report, self.deps.catalog.currency)

    async def GetRevenueMetrics(
        self, request: pb.GetRevenueMetricsRequest, context: ServicerContext
    ) -> revenue_pb2.RevenueMetrics:
        now = self.ctx.clock.now()
        with Violations() as bad:
            start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
            end: datetime = now
            if request.HasField("start_time"):
                start = to_datetime(request.start_time, "start_time", bad)
            if request.HasField("end_time"):
                end = to_datetime(request.end_time, "end_time", bad)
            if not bad and start >= end:
                bad.add("start_time", "must be before end_time")
        async with self.db.unit_of_work(readonly=True) as uow:
            metrics = await revenue.metrics(uow, self.deps, start, end)
        return convert.revenue_metrics(metrics, self.deps.catalog.currency)

    async def ListAddOns(
        self, request: pb.ListAddOnsRequest, context: ServicerContext
    ) -> pb.ListAddOnsResponse:
        catalog = self.deps.catalog
        page, token = pagination.page_of(
            "ListAddOns", catalog.add_ons, request.page_size, request.page_token, ""
        )
        return pb.ListAddOnsResponse(
            add_ons=[convert.add_on(a, catalog.currency) for a in page], next_page_token=token
        )

    async def ListTenantAddOns(
        self, request: pb.ListTenantAddOnsRequest, context: ServicerContext
    ) -> pb.ListTenantAddOnsResponse:
        async with self.db.unit_of_work() as uow:
            views = await add_ons.of_tenant(uow, self.deps, current_call().tenant_id)
        currency = self.deps.catalog.currency
        return pb.ListTenantAddOnsResponse(add_ons=[convert.tenant_add_on(v, currency) for v in views])

    async def EnableAddOn(
        self, request: pb.EnableAddOnRequest, context: ServicerContext
    ) -> add_on_pb2.TenantAddOn:
        return await self._enable(request.add_on_id, True)

    async def DisableAddOn(
        self, request: pb.DisableAddOnRequest, context: ServicerContext
    ) -> add_on_pb2.TenantAddOn:
        return await self._enable(request.add_on_id, False)

    async def _enable(self, add_on_id: str, enabled: bool) -> add_on_pb2.TenantAddOn:
        if not add_on_id:
            raise InvalidArgument(FieldViolation("add_on_id", "is required"))
        async with self.db.unit_of_work() as uow:
            view = await add_ons.set_enabled(uow, self.deps, current_call().tenant_id, add_on_id, enabled)
        return convert.tenant_add_on(view, self.deps.catalog.currency)

    async def SetTenantAddOnPrice(
        self, request: pb.SetTenantAddOnPriceRequest, context: ServicerContext
    ) -> add_on_pb2.TenantAddOn:
        currency = self.deps.catalog.currency
        with Violations() as bad:
            if not request.add_on_id:
                bad.add("add_on_id", "is required")
            price: int | None = None
            if request.HasField("price"):
                price, wrong = convert.price_minor(request.price, currency, "price", add_ons.MAX_PRICE_MINOR)
                bad.extend(wrong)
        async with self.db.unit_of_work() as uow:
            view = await add_ons.set_price(uow, self.deps, current_call().tenant_id, request.add_on_id, price)
        return convert.tenant_add_on(view, currency)


_OUTCOME = {
    webhooks.APPLIED: pb.STRIPE_EVENT_OUTCOME_APPLIED,
    webhooks.DUPLICATE: pb.STRIPE_EVENT_OUTCOME_DUPLICATE,
    webhooks.STALE: pb.STRIPE_EVENT_OUTCOME_STALE,
    webhooks.IGNORED: pb.STRIPE_EVENT_OUTCOME_IGNORED,
}
