"""Credits through the real server (the local payment provider): the ledger never overdraws
under concurrency, every idempotent call takes effect once however it is retried,
reservations hold and settle exactly, a rate change never reprices the past, the low-balance
event fires once per crossing, and `nexus credits audit` finds the balances equal to their
ledgers."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from sqlalchemy import func, select

from nexus.billing.v1 import billing_service_pb2 as pb
from nexus.billing.v1 import billing_service_pb2_grpc as rpc
from nexus.billing.v1 import credit_pb2, credit_rate_pb2
from nexus_server.app.server import NexusServer
from nexus_server.billing import ledger
from nexus_server.billing.catalog import DEFAULT, CreditRate
from nexus_server.billing.holds import HoldSweep
from nexus_server.billing.tables import credit_balances, credit_transactions
from nexus_server.db.schema import events
from tests.integration.test_apikeys_command import _run
from tests.support import (
    User,
    field_violations,
    issue_key,
    key_metadata,
    make_tenant,
    platform_admin,
    reason,
    register_user,
    status_details,
)

K = credit_pb2


async def _tenant(srv: NexusServer, channel: grpc.aio.Channel) -> tuple[User, str, Any]:
    owner = await register_user(channel)
    tenant_id = await make_tenant(srv, owner.user_id)
    key = await issue_key(srv, tenant_id, ["credits:consume", "billing:read"])
    return owner, tenant_id, key_metadata(key)


async def _grant(stub: rpc.BillingServiceStub, admin: User, tenant_id: str, amount: int, key: str) -> None:
    await stub.GrantCredits(
        pb.GrantCreditsRequest(
            tenant_id=tenant_id,
            amount=amount,
            kind=K.CREDIT_TRANSACTION_KIND_GRANT,
            idempotency_key=key,
            description="test",
        ),
        metadata=admin.metadata(tenant_id),
    )


async def _outcome(call: Any) -> str:
    """ "ok", or the reason a concurrent call was refused."""
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return reason(error)
    return "ok"


async def _ledger(srv: NexusServer, tenant_id: str) -> tuple[int, int, int]:
    """(stored balance, ledger sum, entries)."""
    async with srv.db.unit_of_work(readonly=True) as uow:
        balance = (
            await uow.session.execute(
                select(credit_balances.c.balance).where(credit_balances.c.tenant_id == tenant_id)
            )
        ).scalar_one_or_none()
        total, count = (
            await uow.session.execute(
                select(func.coalesce(func.sum(credit_transactions.c.amount), 0), func.count()).where(
                    credit_transactions.c.tenant_id == tenant_id
                )
            )
        ).one()
    return int(balance or 0), int(total), int(count)


async def test_a_thousand_concurrent_consumes_against_500_credits_take_exactly_500(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel
) -> None:
    srv = server[0]
    _, tenant_id, md = await _tenant(srv, channel)
    admin = await platform_admin(srv, channel)
    stub = rpc.BillingServiceStub(channel)
    await _grant(stub, admin, tenant_id, 500, "seed")

    def one(i: int) -> Any:
        request = pb.ConsumeCreditsRequest(tenant_id=tenant_id, amount=1, idempotency_key=f"call-{i}")
        return _outcome(stub.ConsumeCredits(request, metadata=md))

    outcomes = await asyncio.gather(*(one(i) for i in range(1000)))
    assert outcomes.count("ok") == 500
    assert set(outcomes) == {"ok", "INSUFFICIENT_CREDITS"}
    assert await _ledger(srv, tenant_id) == (0, 0, 501)
    balance = await stub.GetCreditBalance(pb.GetCreditBalanceRequest(tenant_id=tenant_id), metadata=md)
    assert balance.balance == 0


async def test_every_idempotent_credit_call_retried_ten_times_at_once_takes_effect_once(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel
) -> None:
    srv = server[0]
    owner, tenant_id, md = await _tenant(srv, channel)
    admin = await platform_admin(srv, channel)
    stub = rpc.BillingServiceStub(channel)
    grants = await asyncio.gather(*(_grant(stub, admin, tenant_id, 1000, "g-1") for _ in range(10)))
    assert len(grants) == 10
    consume = pb.ConsumeCreditsRequest(tenant_id=tenant_id, amount=7, idempotency_key="c-1")
    consumed = await asyncio.gather(*(stub.ConsumeCredits(consume, metadata=md) for _ in range(10)))
    assert len({r.transaction.id for r in consumed}) == 1
    reserve = pb.ReserveCreditsRequest(tenant_id=tenant_id, amount=50, idempotency_key="r-1")
    held = await asyncio.gather(*(stub.ReserveCredits(reserve, metadata=md) for _ in range(10)))
    assert len({r.id for r in held}) == 1
    buy = pb.PurchaseCreditsRequest(tenant_id=tenant_id, credit_package_id="starter", idempotency_key="p-1")
    bought = await asyncio.gather(
        *(stub.PurchaseCredits(buy, metadata=owner.metadata(tenant_id)) for _ in range(10))
    )
    assert len({r.checkout_session_id for r in bought}) == 1
    assert await _ledger(srv, tenant_id) == (1000 - 7 - 50 + 10_000, 1000 - 7 - 50 + 10_000, 4)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ConsumeCredits(
            pb.ConsumeCreditsRequest(tenant_id=tenant_id, amount=8, idempotency_key="c-1"), metadata=md
        )
    assert reason(caught.value) == "IDEMPOTENCY_KEY_REUSED"


async def test_an_overdraft_is_refused_with_the_shortfall_and_consumes_nothing(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel
) -> None:
    srv = server[0]
    _, tenant_id, md = await _tenant(srv, channel)
    stub = rpc.BillingServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ConsumeCredits(
            pb.ConsumeCreditsRequest(tenant_id=tenant_id, amount=5, idempotency_key="x"), metadata=md
        )
    error = caught.value
    assert (error.code(), reason(error)) == (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_CREDITS")
    (failure,) = status_details(error, error_details_pb2.PreconditionFailure)
    assert [v.subject for v in failure.violations] == ["credits"]
    assert await _ledger(srv, tenant_id) == (0, 0, 0)


async def test_model_usage_is_priced_by_the_rate_table_rounded_up(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel
) -> None:
    srv = server[0]
    _, tenant_id, md = await _tenant(srv, channel)
    admin = await platform_admin(srv, channel)
    stub = rpc.BillingServiceStub(channel)
    await _grant(stub, admin, tenant_id, 1000, "seed")
    usage = credit_rate_pb2.ModelUsage(
        provider="openai", model="gpt-4o", input_tokens=1200, output_tokens=350
    )
    estimate = await stub.EstimateCredits(pb.EstimateCreditsRequest(model_usage=usage))
    # (1,200 × 2,500 + 350 × 10,000) / 1,000,000 = 6.5, rounded up to 7.
    assert estimate.credits == 7
    consumed = await stub.ConsumeCredits(
        pb.ConsumeCreditsRequest(tenant_id=tenant_id, model_usage=usage, idempotency_key="chat-1"),
        metadata=md,
    )
    assert (consumed.transaction.amount, consumed.transaction.balance_after) == (-7, 993)
    assert consumed.transaction.model_usage.model == "gpt-4o"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.EstimateCredits(
            pb.EstimateCreditsRequest(
                model_usage=credit_rate_pb2.ModelUsage(provider="acme", model="x", input_tokens=1)
            )
        )
    assert (reason(caught.value), field_violations(caught.value)) == (
        "MODEL_NOT_PRICED",
        ["model_usage.model"],
    )


async def test_a_rate_change_leaves_earlier_transactions_prices_unchanged(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel
) -> None:
    srv = server[0]
    _, tenant_id, _ = await _tenant(srv, channel)
    dearer = replace(
        DEFAULT,
        credit_rates=tuple(
            CreditRate(r.provider, r.model, r.input_per_million * 10, r.output_per_million * 10)
            for r in DEFAULT.credit_rates
        ),
    )
    usage = ledger.Usage("openai", "gpt-4o", 1000, 1000)
    async with srv.db.unit_of_work() as uow:
        await ledger.grant(
            uow,
            DEFAULT,
            tenant_id,
            kind="grant",
            amount=10_000,
            key="seed",
            description="seed",
            metadata=None,
            actor="t",
        )
        before = await ledger.consume(
            uow, DEFAULT, tenant_id, amount=0, usage=usage, key="a", description="", metadata=None, actor="t"
        )
    async with srv.db.unit_of_work() as uow:
        after = await ledger.consume(
            uow, dearer, tenant_id, amount=0, usage=usage, key="b", description="", metadata=None, actor="t"
        )
    async with srv.db.unit_of_work(readonly=True) as uow:
        rows = await ledger.list_page(
            uow, tenant_id, kind="consume", start=None, end=None, before_id=None, limit=10
        )
    stored = {r.idempotency_key: r for r in rows}
    assert (before.amount, after.amount) == (-13, -125)
    assert stored["consume:a"].amount == -13
    assert stored["consume:a"].model_usage is not None
    assert stored["consume:a"].model_usage["input_credits_per_million_tokens"] == 2500
    assert stored["consume:b"].model_usage is not None
    assert stored["consume:b"].model_usage["input_credits_per_million_tokens"] == 25000


async def test_reserve_100_commit_37_costs_37_and_an_expired_hold_comes_back(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel
) -> None:
    srv = server[0]
    _, tenant_id, md = await _tenant(srv, channel)
    admin = await platform_admin(srv, channel)
    stub = rpc.BillingServiceStub(channel)
    await _grant(stub, admin, tenant_id, 1000, "seed")
    held = await stub.ReserveCredits(
        pb.ReserveCreditsRequest(tenant_id=tenant_id, amount=100, idempotency_key="r"), metadata=md
    )
    assert (held.state, held.balance_after) == (K.CREDIT_RESERVATION_STATE_HELD, 900)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CommitReservation(
            pb.CommitReservationRequest(tenant_id=tenant_id, reservation_id=held.id, amount=101), metadata=md
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    done = await stub.CommitReservation(
        pb.CommitReservationRequest(tenant_id=tenant_id, reservation_id=held.id, amount=37), metadata=md
    )
    assert (done.state, done.consumed, done.balance_after) == (K.CREDIT_RESERVATION_STATE_COMMITTED, 37, 963)
    again = await stub.CommitReservation(
        pb.CommitReservationRequest(tenant_id=tenant_id, reservation_id=held.id, amount=37), metadata=md
    )
    assert again.balance_after == 963
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ReleaseReservation(
            pb.ReleaseReservationRequest(tenant_id=tenant_id, reservation_id=held.id), metadata=md
        )
    assert reason(caught.value) == "RESERVATION_NOT_HELD"

    brief = pb.ReserveCreditsRequest(tenant_id=tenant_id, amount=200, idempotency_key="brief")
    brief.ttl.seconds = 1
    short = await stub.ReserveCredits(brief, metadata=md)
    assert short.balance_after == 763
    await asyncio.sleep(1.1)
    assert await HoldSweep(srv.db, srv.capabilities.billing.catalog).step() >= 1
    balance = await stub.GetCreditBalance(pb.GetCreditBalanceRequest(tenant_id=tenant_id), metadata=md)
    assert balance.balance == 963
    assert await _ledger(srv, tenant_id) == (
        963,
        963,
        6,
    )  # grant, reserve, release, consume, reserve, release


async def test_concurrent_reservations_never_hold_more_than_the_balance(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel
) -> None:
    srv = server[0]
    _, tenant_id, md = await _tenant(srv, channel)
    admin = await platform_admin(srv, channel)
    stub = rpc.BillingServiceStub(channel)
    await _grant(stub, admin, tenant_id, 100, "seed")

    def hold(i: int) -> Any:
        request = pb.ReserveCreditsRequest(tenant_id=tenant_id, amount=10, idempotency_key=f"h-{i}")
        return _outcome(stub.ReserveCredits(request, metadata=md))

    held = await asyncio.gather(*(hold(i) for i in range(30)))
    assert (held.count("ok"), set(held)) == (10, {"ok", "INSUFFICIENT_CREDITS"})
    assert await _ledger(srv, tenant_id) == (0, 0, 11)


async def test_low_balance_fires_once_per_crossing_of_the_threshold(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel
) -> None:
    srv = server[0]
    _, tenant_id, md = await _tenant(srv, channel)
    admin = await platform_admin(srv, channel)
    stub = rpc.BillingServiceStub(channel)

    async def spend(n: int, key: str) -> None:
        await stub.ConsumeCredits(
            pb.ConsumeCreditsRequest(tenant_id=tenant_id, amount=n, idempotency_key=key), metadata=md
        )

    await _grant(stub, admin, tenant_id, 1500, "g1")
    await spend(600, "s1")  # 900: below 1,000, told
    await spend(100, "s2")  # 800: still below, not told again
    held = await stub.ReserveCredits(
        pb.ReserveCreditsRequest(tenant_id=tenant_id, amount=300, idempotency_key="r"), metadata=md
    )
    await stub.CommitReservation(  # the hold comes back (1,100) and 50 go: no second alert
        pb.CommitReservationRequest(tenant_id=tenant_id, reservation_id=held.id, amount=50), metadata=md
    )
    await _grant(stub, admin, tenant_id, 500, "g2")  # 1,250: above again
    await spend(400, "s3")  # 850: a new crossing, told
    async with srv.db.unit_of_work(readonly=True) as uow:
        told = (
            await uow.session.execute(
                select(func.count()).where(
                    events.c.tenant_id == tenant_id, events.c.type == "credits.low_balance"
                )
            )
        ).scalar_one()
    assert told == 2


async def test_credit_requests_out_of_range_are_invalid_argument_naming_the_fields(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel
) -> None:
    srv = server[0]
    _, tenant_id, md = await _tenant(srv, channel)
    stub = rpc.BillingServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ConsumeCredits(pb.ConsumeCreditsRequest(tenant_id=tenant_id, amount=0), metadata=md)
    assert set(field_violations(caught.value)) == {"amount", "idempotency_key"}
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ConsumeCredits(
            pb.ConsumeCreditsRequest(
                tenant_id=tenant_id,
                model_usage=credit_rate_pb2.ModelUsage(provider="OpenAI", model="", input_tokens=-1),
                idempotency_key="k",
            ),
            metadata=md,
        )
    assert {"model_usage.provider", "model_usage.model", "model_usage.input_tokens"} <= set(
        field_violations(caught.value)
    )


async def test_packages_and_rates_are_public_and_ordered(channel: grpc.aio.Channel) -> None:
    stub = rpc.BillingServiceStub(channel)
    packages = await stub.ListCreditPackages(pb.ListCreditPackagesRequest())
    assert [(p.id, p.credits) for p in packages.credit_packages] == [
        ("starter", 10_000),
        ("pro", 50_000),
        ("enterprise", 500_000),
    ]
    rates = await stub.ListCreditRates(pb.ListCreditRatesRequest(provider="openai"))
    assert [r.model for r in rates.credit_rates] == ["gpt-4o", "gpt-4o-mini"]


async def test_credits_audit_finds_every_balance_equal_to_its_ledger(
    server: tuple[NexusServer, int],
    channel: grpc.aio.Channel,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    srv = server[0]
    _, tenant_id, _ = await _tenant(srv, channel)
    admin = await platform_admin(srv, channel)
    await _grant(rpc.BillingServiceStub(channel), admin, tenant_id, 10, "seed")
    monkeypatch.setenv("NEXUS_DATABASE_URL", database_url)
    assert await _run(["credits", "audit"]) == 0
    assert "0 disagree" in capsys.readouterr().out
    async with srv.db.unit_of_work() as uow:  # a balance edited behind the ledger's back
        await uow.session.execute(
            credit_balances.update().where(credit_balances.c.tenant_id == tenant_id).values(balance=11)
        )
    assert await _run(["credits", "audit"]) == 1
    assert f"{tenant_id}: balance 11, ledger sum 10" in capsys.readouterr().out
    async with srv.db.unit_of_work() as uow:
        await uow.session.execute(
            credit_balances.update().where(credit_balances.c.tenant_id == tenant_id).values(balance=10)
        )


async def test_a_plans_monthly_credits_are_granted_once_for_each_period(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel
) -> None:
    srv = server[0]
    owner, tenant_id, md = await _tenant(srv, channel)
    stub = rpc.BillingServiceStub(channel)
    await stub.CreateCheckoutSession(
        pb.CreateCheckoutSessionRequest(tenant_id=tenant_id, plan_id="pro"),
        metadata=owner.metadata(tenant_id),
    )
    await stub.ChangePlan(  # the same period: nothing more is granted
        pb.ChangePlanRequest(tenant_id=tenant_id, plan_id="pro", seats=3), metadata=owner.metadata(tenant_id)
    )
    listed = await stub.ListCreditTransactions(
        pb.ListCreditTransactionsRequest(tenant_id=tenant_id, kind=K.CREDIT_TRANSACTION_KIND_GRANT),
        metadata=md,
    )
    assert [(t.amount, t.actor) for t in listed.credit_transactions] == [(5_000, "system")]
    assert (
        await stub.GetCreditBalance(pb.GetCreditBalanceRequest(tenant_id=tenant_id), metadata=md)
    ).balance == 5_000


async def test_transactions_page_newest_first_with_tokens_bound_to_the_filter(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel
) -> None:
    srv = server[0]
    _, tenant_id, md = await _tenant(srv, channel)
    admin = await platform_admin(srv, channel)
    stub = rpc.BillingServiceStub(channel)
    await _grant(stub, admin, tenant_id, 100, "seed")
    for i in range(4):
        await stub.ConsumeCredits(
            pb.ConsumeCreditsRequest(tenant_id=tenant_id, amount=i + 1, idempotency_key=f"k{i}"), metadata=md
        )
    seen: list[int] = []
    token = ""
    while True:
        page = await stub.ListCreditTransactions(
            pb.ListCreditTransactionsRequest(tenant_id=tenant_id, page_size=2, page_token=token), metadata=md
        )
        seen += [t.amount for t in page.credit_transactions]
        token = page.next_page_token
        if not token:
            break
        last = token
    assert seen == [-4, -3, -2, -1, 100]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListCreditTransactions(
            pb.ListCreditTransactionsRequest(
                tenant_id=tenant_id, page_token=last, kind=K.CREDIT_TRANSACTION_KIND_GRANT
            ),
            metadata=md,
        )
    assert reason(caught.value) == "PAGE_TOKEN_INVALID"
