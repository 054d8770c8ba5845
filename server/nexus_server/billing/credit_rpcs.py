"""BillingService's credit RPCs: request -> domain -> workflow -> response, as service.py's
other half (mixed into BillingServicer, which supplies `db` and `deps`)."""

from __future__ import annotations

import logging
from datetime import timedelta

from google.api import httpbody_pb2

from nexus.billing.v1 import billing_service_pb2 as pb
from nexus.billing.v1 import credit_pb2
from nexus_server.billing import convert, ledger, purchases, rules, selling
from nexus_server.billing import revolut_webhook as revolut
from nexus_server.billing.ports import Deps
from nexus_server.billing.provider import ProviderError
from nexus_server.common import pagination
from nexus_server.common.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NexusError,
    NotFound,
    Unauthenticated,
    Unavailable,
)
from nexus_server.common.ids import is_id
from nexus_server.common.timestamps import to_datetime, to_timedelta
from nexus_server.common.validation import Violations
from nexus_server.db.uow import Database, UnitOfWork
from nexus_server.interceptors.call import ServicerContext, current_call

MAX_QUANTITY = 100
log = logging.getLogger("nexus.billing")
MAX_HOLD = timedelta(hours=24)
GRANT_KINDS = {
    credit_pb2.CREDIT_TRANSACTION_KIND_GRANT: ledger.GRANT,
    credit_pb2.CREDIT_TRANSACTION_KIND_REFUND: ledger.REFUND,
}


def _actor() -> str:
    principal = current_call().principal
    return principal.subject if principal is not None else "system"


class CreditRpcs:
    db: Database
    deps: Deps
    redirect_hosts: tuple[str, ...]

    async def ListCreditPackages(
        self, request: pb.ListCreditPackagesRequest, context: ServicerContext
    ) -> pb.ListCreditPackagesResponse:
        catalog = self.deps.catalog
        page, token = pagination.page_of(
            "ListCreditPackages", catalog.credit_packages, request.page_size, request.page_token, ""
        )
        return pb.ListCreditPackagesResponse(
            credit_packages=[convert.credit_package(p, catalog.currency) for p in page], next_page_token=token
        )

    async def ListCreditRates(
        self, request: pb.ListCreditRatesRequest, context: ServicerContext
    ) -> pb.ListCreditRatesResponse:
        rates = [
            r
            for r in self.deps.catalog.credit_rates
            if not request.provider or r.provider == request.provider
        ]
        page, token = pagination.page_of(
            "ListCreditRates", rates, request.page_size, request.page_token, request.provider
        )
        return pb.ListCreditRatesResponse(
            credit_rates=[convert.credit_rate(r) for r in page], next_page_token=token
        )

    async def EstimateCredits(
        self, request: pb.EstimateCreditsRequest, context: ServicerContext
    ) -> pb.EstimateCreditsResponse:
        m = request.model_usage
        with Violations() as bad:
            if not request.HasField("model_usage"):
                bad.add("model_usage", "is required")
            else:
                rules.model_usage(m.provider, m.model, m.input_tokens, m.output_tokens, "model_usage", bad)
        credits, rate = ledger.price(self.deps.catalog, convert.usage(m))
        return pb.EstimateCreditsResponse(credits=credits, rate=convert.credit_rate(rate))

    async def GetCreditBalance(
        self, request: pb.GetCreditBalanceRequest, context: ServicerContext
    ) -> credit_pb2.CreditBalance:
        tenant_id = current_call().tenant_id
        async with self.db.unit_of_work(readonly=True) as uow:
            await self._exists(uow, tenant_id)
            row = await ledger.balance_of(uow, tenant_id)
        return convert.credit_balance(tenant_id, row)

    async def _exists(self, uow: UnitOfWork, tenant_id: str) -> None:
        facts = await self.deps.tenants.facts(uow, tenant_id)
        if facts is None or facts.status == "deleted":
            raise NotFound(f"tenant {tenant_id} does not exist")

    async def ListCreditTransactions(
        self, request: pb.ListCreditTransactionsRequest, context: ServicerContext
    ) -> pb.ListCreditTransactionsResponse:
        tenant_id = current_call().tenant_id
        with Violations() as bad:
            size = pagination.page_size(request.page_size, bad)
            start = (
                to_datetime(request.start_time, "start_time", bad) if request.HasField("start_time") else None
            )
            end = to_datetime(request.end_time, "end_time", bad) if request.HasField("end_time") else None
            if start is not None and end is not None and start > end:
                bad.add("start_time", "must not be after end_time")
            if request.kind and request.kind not in convert.KIND_NAMES:
                bad.add("kind", "is not a CreditTransactionKind")
        kind = convert.KIND_NAMES.get(request.kind)
        query = {"t": tenant_id, "k": kind or "", "s": start, "e": end}
        after = pagination.decode(request.page_token, "ListCreditTransactions", query, (str,))
        async with self.db.unit_of_work(readonly=True) as uow:
            await self._exists(uow, tenant_id)
            rows = await ledger.list_page(
                uow,
                tenant_id,
                kind=kind,
                start=start,
                end=end,
                before_id=after[0] if after else None,
                limit=size + 1,
            )
        page, token = pagination.page(rows, size, "ListCreditTransactions", query, lambda r: (r.id,))
        return pb.ListCreditTransactionsResponse(
            credit_transactions=[convert.credit_transaction(r) for r in page], next_page_token=token
        )

    async def ConsumeCredits(
        self, request: pb.ConsumeCreditsRequest, context: ServicerContext
    ) -> pb.ConsumeCreditsResponse:
        cost = request.WhichOneof("cost")
        with Violations() as bad:
            if cost is None:
                bad.add("amount", "exactly one of amount and model_usage is required")
            elif cost == "amount":
                rules.credit_amount(request.amount, "amount", bad)
            else:
                m = request.model_usage
                rules.model_usage(m.provider, m.model, m.input_tokens, m.output_tokens, "model_usage", bad)
            rules.idempotency_key(request.idempotency_key, "idempotency_key", bad)
            rules.note(request.description, "description", bad)
            metadata, size = convert.struct_dict(request.metadata)
            rules.metadata_size(size, "metadata", bad)
        async with self.db.unit_of_work() as uow:
            await self._exists(uow, current_call().tenant_id)
            row = await ledger.consume(
                uow,
                self.deps.catalog,
                current_call().tenant_id,
                amount=request.amount,
                usage=convert.usage(request.model_usage) if cost == "model_usage" else None,
                key=request.idempotency_key,
                description=request.description,
                metadata=metadata,
                actor=_actor(),
            )
        return pb.ConsumeCreditsResponse(transaction=convert.credit_transaction(row))

    async def GrantCredits(
        self, request: pb.GrantCreditsRequest, context: ServicerContext
    ) -> pb.GrantCreditsResponse:
        with Violations() as bad:
            rules.credit_amount(request.amount, "amount", bad)
            if request.kind not in GRANT_KINDS:
                bad.add("kind", "must be CREDIT_TRANSACTION_KIND_GRANT or CREDIT_TRANSACTION_KIND_REFUND")
            rules.idempotency_key(request.idempotency_key, "idempotency_key", bad)
            rules.note(request.description, "description", bad, required=True)
            metadata, size = convert.struct_dict(request.metadata)
            rules.metadata_size(size, "metadata", bad)
        tenant_id = current_call().tenant_id
        async with self.db.unit_of_work() as uow:
            await self._exists(uow, tenant_id)
            row = await ledger.grant(
                uow,
                self.deps.catalog,
                tenant_id,
                kind=GRANT_KINDS[request.kind],
                amount=request.amount,
                key=request.idempotency_key,
                description=request.description,
                metadata=metadata,
                actor=_actor(),
            )
        return pb.GrantCreditsResponse(transaction=convert.credit_transaction(row))

    async def PurchaseCredits(
        self, request: pb.PurchaseCreditsRequest, context: ServicerContext
    ) -> pb.PurchaseCreditsResponse:
        with Violations() as bad:
            if not 0 <= request.quantity <= MAX_QUANTITY:
                bad.add("quantity", f"must be from 1 to {MAX_QUANTITY}, or 0 for 1")
            if not request.credit_package_id:
                bad.add("credit_package_id", "is required")
            selling.redirect_url(request.success_url, "success_url", self.redirect_hosts, bad)
            selling.redirect_url(request.cancel_url, "cancel_url", self.redirect_hosts, bad)
            rules.idempotency_key(request.idempotency_key, "idempotency_key", bad, required=False)
        package = self.deps.catalog.credit_package(request.credit_package_id)
        if package is None:
            raise NotFound(f"credit package {request.credit_package_id!r} does not exist")
        async with self.db.unit_of_work() as uow:
            opened = await purchases.purchase(
                uow,
                self.deps,
                current_call().tenant_id,
                package,
                request.quantity or 1,
                request.success_url,
                request.cancel_url,
                request.idempotency_key,
                _actor(),
            )
        reply = pb.PurchaseCreditsResponse(
            checkout_session_id=opened.session_id, url=opened.url, credits=opened.credits
        )
        reply.expire_time.FromDatetime(opened.expire_time)
        return reply

    async def ReserveCredits(
        self, request: pb.ReserveCreditsRequest, context: ServicerContext
    ) -> credit_pb2.CreditReservation:
        with Violations() as bad:
            rules.credit_amount(request.amount, "amount", bad)
            hold = ledger.DEFAULT_HOLD
            if request.HasField("ttl"):
                hold = to_timedelta(request.ttl, "ttl", MAX_HOLD, bad)
                if hold < timedelta(seconds=1):
                    bad.add("ttl", "must be at least 1 second")
            rules.idempotency_key(request.idempotency_key, "idempotency_key", bad)
            rules.note(request.description, "description", bad)
        tenant_id = current_call().tenant_id
        async with self.db.unit_of_work() as uow:
            await self._exists(uow, tenant_id)
            row = await ledger.reserve(
                uow,
                self.deps.catalog,
                tenant_id,
                amount=request.amount,
                hold=hold,
                key=request.idempotency_key,
                description=request.description,
                actor=_actor(),
            )
        return convert.reservation(row)

    async def CommitReservation(
        self, request: pb.CommitReservationRequest, context: ServicerContext
    ) -> credit_pb2.CreditReservation:
        with Violations() as bad:
            _reservation_id(request.reservation_id, bad)
            rules.credit_amount(request.amount, "amount", bad, lo=0)
            if request.HasField("model_usage"):
                m = request.model_usage
                rules.model_usage(m.provider, m.model, m.input_tokens, m.output_tokens, "model_usage", bad)
        async with self.db.unit_of_work() as uow:
            row = await ledger.commit(
                uow,
                self.deps.catalog,
                current_call().tenant_id,
                request.reservation_id,
                amount=request.amount,
                usage=convert.usage(request.model_usage) if request.HasField("model_usage") else None,
                actor=_actor(),
            )
        return convert.reservation(row)

    async def ReleaseReservation(
        self, request: pb.ReleaseReservationRequest, context: ServicerContext
    ) -> credit_pb2.CreditReservation:
        with Violations() as bad:
            _reservation_id(request.reservation_id, bad)
        async with self.db.unit_of_work() as uow:
            row = await ledger.release(
                uow, self.deps.catalog, current_call().tenant_id, request.reservation_id, actor=_actor()
            )
        return convert.reservation(row)

    async def HandleRevolutWebhook(
        self, request: httpbody_pb2.HttpBody, context: ServicerContext
    ) -> pb.HandleRevolutWebhookResponse:
        deps = self.deps
        if deps.credits is None or deps.credits.name != "revolut" or not deps.revolut_webhook_secrets:
            raise FailedPrecondition(
                "Revolut is not the configured credits provider", reason="REVOLUT_NOT_CONFIGURED"
            )
        metadata = current_call().metadata
        try:
            event = revolut.verified_event(
                request.data,
                metadata.get("revolut-signature", ""),
                metadata.get("revolut-request-timestamp", ""),
                deps.revolut_webhook_secrets,
            )
        except revolut.SignatureInvalid as error:
            raise Unauthenticated(str(error), reason="REVOLUT_SIGNATURE_INVALID") from error
        except revolut.NotAnEvent as error:
            raise InvalidArgument(FieldViolation("data", str(error))) from error
        name, order_id = str(event["event"]), str(event["order_id"])
        outcome = pb.STRIPE_EVENT_OUTCOME_IGNORED
        if name == "ORDER_COMPLETED":
            try:
                order = await deps.credits.get_checkout(order_id)
                async with self.db.unit_of_work() as uow:
                    credited = await purchases.settle(uow, deps, "revolut", order)
            except ProviderError as error:
                raise Unavailable(
                    f"could not re-read the order from Revolut ({error}); Revolut will retry",
                    reason="PAYMENT_PROVIDER_UNAVAILABLE",
                ) from error
            except NexusError:
                raise
            except Exception as error:
                # Nothing was credited (the transaction rolled back); Revolut retries a non-2xx.
                log.exception("Revolut event for order %s could not be applied", order_id)
                raise Unavailable("the event could not be applied now; Revolut will retry") from error
            outcome = {
                purchases.CREDITED: pb.STRIPE_EVENT_OUTCOME_APPLIED,
                purchases.ALREADY: pb.STRIPE_EVENT_OUTCOME_DUPLICATE,
                purchases.UNPAID: pb.STRIPE_EVENT_OUTCOME_STALE,
                purchases.UNKNOWN: pb.STRIPE_EVENT_OUTCOME_IGNORED,
            }[credited]
        return pb.HandleRevolutWebhookResponse(event=name, order_id=order_id, outcome=outcome)


def _reservation_id(value: str, bad: Violations) -> None:
    if not is_id(value, "rsv"):
        bad.add("reservation_id", "must be a reservation id (rsv_…)")
