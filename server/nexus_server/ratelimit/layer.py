"""The rate-limit layer of the chain: after authentication, before the servicer.

Every authenticated call charges all limits that apply to it at once (key or user, and
tenant); a call refused by one limit charges none. Every response carries the IETF
RateLimit fields; a refusal is RESOURCE_EXHAUSTED (reason RATE_LIMITED) with RetryInfo and
a QuotaFailure naming each limit that refused it.
"""

from __future__ import annotations

from datetime import timedelta

from nexus_server.common.errors import QuotaViolation, ResourceExhausted
from nexus_server.interceptors.call import Call
from nexus_server.interceptors.layer import nothing_after
from nexus_server.ratelimit import headers
from nexus_server.ratelimit.limiter import Limiter
from nexus_server.ratelimit.limits import BackendUnavailable
from nexus_server.ratelimit.policies import Policies


class RateLimitLayer:
    def __init__(self, limiter: Limiter, policies: Policies):
        self.limiter = limiter
        self.policies = policies

    async def before(self, call: Call) -> None:
        principal = call.principal
        if principal is None:
            return  # public RPCs, health and reflection
        # Only a tenant that is the caller's own is charged (Call.tenant_is_callers).
        tenant_id = call.tenant_id if call.tenant_is_callers else ""
        limits = self.policies.cached_limits(principal, tenant_id)
        if limits is None:
            limits = await self.policies.limits_for(principal, tenant_id)
        try:
            decision = await self.limiter.charge(limits, 1)
        except BackendUnavailable:
            raise ResourceExhausted(
                "rate limits cannot be checked right now; retry shortly",
                retry_after=timedelta(seconds=1),
                violations=[QuotaViolation("ratelimit:store", "the rate-limit store is unreachable")],
            ) from None
        call.rate_limits = decision
        call.response_metadata.extend(headers.fields(decision))
        if decision.allowed:
            return
        refused = decision.refused_by
        raise ResourceExhausted(
            "rate limit exceeded: "
            + ", ".join(f"{s.limit.policy} ({s.limit.per_minute}/min)" for s in refused),
            retry_after=timedelta(seconds=decision.retry_after),
            violations=[
                QuotaViolation(s.limit.key, f"{s.limit.per_minute} calls per minute ({s.limit.policy} limit)")
                for s in refused
            ],
            metadata={
                "policy": refused[0].limit.policy,
                "limit_per_minute": str(refused[0].limit.per_minute),
            },
        )

    after = staticmethod(nothing_after)
