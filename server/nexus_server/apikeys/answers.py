"""VerifyApiKey's answers: what a service is told about a key it was given, Unkey-style.
verifier.py checks the key itself (its text, cached record and secret) for every
authenticated call; this turns that check, the tenant's status, scopes and rate limit into
the answer.

An invalid key is an answer, never an error; a key of another tenant is answered exactly
like a missing one. Reasons are checked in the contract's order (malformed, not found,
revoked, expired, tenant suspended, insufficient scope, rate limited), and the key's rate
limit is charged only when every other check passed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import NamedTuple

from nexus_server.apikeys import rules
from nexus_server.apikeys.store import ApiKeyRow
from nexus_server.apikeys.verifier import MALFORMED, NOT_FOUND, KeyVerifier
from nexus_server.auth.principal import Principal
from nexus_server.common.validation import Violations
from nexus_server.ratelimit.limiter import Limiter
from nexus_server.ratelimit.limits import BackendUnavailable, Decision, Limit, LimitState

MAX_KEY = 512
MAX_REQUIRED = 20
MAX_COST = 1000

VALID = "valid"
TENANT_SUSPENDED = "tenant_suspended"
INSUFFICIENT_SCOPE = "insufficient_scope"
RATE_LIMITED = "rate_limited"


# NamedTuples: one or two are built on every VerifyApiKey, and tuples build fast.
class RateState(NamedTuple):
    limit: int
    remaining: int
    reset_time: datetime
    retry_after: timedelta | None


class Answer(NamedTuple):
    reason: str  # valid | malformed | not_found | revoked | expired | tenant_suspended | …
    row: ApiKeyRow | None = None
    missing_scopes: tuple[str, ...] = ()
    rate: RateState | None = None
    previous_secret: bool = False
    previous_secret_expire_time: datetime | None = None

    @property
    def valid(self) -> bool:
        return self.reason == VALID


def own_charge(decision: Decision | None, caller: Principal | None) -> LimitState | None:
    """The calling key's own limit as the rate-limit layer charged it for this call
    (`decision`), for `verify`'s `charged`; None for a person or a call not charged."""
    if decision is None or caller is None or not caller.key_id:
        return None
    for state in decision.states:
        if state.limit.policy == "apikey":
            return state
    return None


def validate(key: str, required_scopes: list[str], cost: int) -> None:
    with Violations() as bad:
        if not key:
            bad.add("key", "must not be empty")
        elif len(key) > MAX_KEY:
            bad.add("key", f"must be at most {MAX_KEY} characters")
        if len(required_scopes) > MAX_REQUIRED:
            bad.add("required_scopes", f"must hold at most {MAX_REQUIRED} entries")
        else:
            for index, scope in enumerate(required_scopes):
                if scope not in rules.SCOPES:
                    bad.add(f"required_scopes[{index}]", "unknown scope")
        if not 0 <= cost <= MAX_COST:
            bad.add("rate_limit_cost", f"must be from 0 to {MAX_COST}")


async def verify(
    verifier: KeyVerifier,
    limiter: Limiter,
    tenant_suspended: Callable[[str], Awaitable[bool]],
    *,
    caller_tenant: str,
    key: str,
    required_scopes: list[str],
    cost: int,
    charged: LimitState | None = None,
) -> Answer:
    """`charged`: the state of a key's limit as the rate-limit layer charged it for this very
    call (the caller verifying its own key); it answers a cost of 0 for that key without
    asking the limiter again."""
    validate(key, required_scopes, cost)
    check = await verifier.check(key)
    if check.outcome == MALFORMED:
        return Answer(MALFORMED)
    row = check.row
    if check.outcome == NOT_FOUND or row is None or row.tenant_id != caller_tenant:
        return Answer(NOT_FOUND)
    previous = check.previous
    previous_expire = row.previous_secret_expire_time if previous else None
    if check.outcome != rules.ACTIVE:  # revoked or expired
        return Answer(check.outcome, row, (), None, previous, previous_expire)
    if await tenant_suspended(row.tenant_id):
        return Answer(TENANT_SUSPENDED, row, (), None, previous, previous_expire)
    if required_scopes:
        missing = tuple(sorted({s for s in required_scopes if not rules.holds(row.scopes, s)}))
        if missing:
            return Answer(INSUFFICIENT_SCOPE, row, missing, None, previous, previous_expire)
    limit = Limit("apikey", "apikey:" + row.id, row.rate_limit_per_minute)
    now = verifier.clock.now()
    # The caller asking about its own key: this call's authentication has noted its use,
    # and the rate-limit layer has charged it (`own` is that charge).
    own = charged if charged is not None and charged.limit == limit else None
    try:
        if cost == 0 and own is not None:
            decision = Decision(True, (own,), 0.0)
        else:
            decision = await limiter.charge([limit], cost)
    except BackendUnavailable:
        rate = RateState(limit.per_minute, 0, now, timedelta(seconds=1))
        return Answer(RATE_LIMITED, row, (), rate, previous, previous_expire)
    if not decision.states:  # limiter failing open: report the full allowance
        rate = RateState(limit.per_minute, limit.per_minute, now, None)
    else:
        state = decision.states[0]
        rate = RateState(
            limit.per_minute,
            max(0, state.remaining),
            now + timedelta(seconds=state.reset_seconds),
            None if decision.allowed else timedelta(seconds=decision.retry_after),
        )
    if not decision.allowed:
        return Answer(RATE_LIMITED, row, (), rate, previous, previous_expire)
    if own is None:
        verifier.note_use(row.id, now)
    return Answer(VALID, row, (), rate, previous, previous_expire)
