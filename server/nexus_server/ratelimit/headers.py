"""The IETF RateLimit fields (draft-ietf-httpapi-ratelimit-headers) as gRPC metadata.

`ratelimit-policy: "apikey";q=100;w=60, "tenant";q=600;w=60` names each limit that applies
(quota `q` per window `w` seconds) and `ratelimit: "apikey";r=99;t=1, …` its state
(remaining `r`, seconds `t` until the allowance is whole again). Envoy passes them on as
HTTP headers.
"""

from __future__ import annotations

import math

from nexus_server.common.memo import Memo
from nexus_server.ratelimit.limits import Decision, Limit, LimitState

POLICY = "ratelimit-policy"
STATE = "ratelimit"


def fields(decision: Decision) -> list[tuple[str, str]]:
    states = decision.states
    if not states:
        return []
    if len(states) == 2:  # the usual call (key or person, and tenant): one string each
        a, b = states
        pair = (a.limit, b.limit)
        policy = _PAIRS.get(pair)
        if policy is None:
            policy = _PAIRS.put(pair, f"{_policy(a.limit)}, {_policy(b.limit)}")
        return [(POLICY, policy), (STATE, f"{_state(a)}, {_state(b)}")]
    return [
        (POLICY, ", ".join([_policy(s.limit) for s in states])),
        (STATE, ", ".join([_state(s) for s in states])),
    ]


def _policy(limit: Limit) -> str:
    # A limit's policy text changes only with its quota: built once per (name, quota).
    text = _POLICIES.get((limit.policy, limit.per_minute))
    if text is None:
        text = _POLICIES.put((limit.policy, limit.per_minute), f'"{limit.policy}";q={limit.per_minute};w=60')
    return text


def _state(s: LimitState) -> str:
    return f'"{s.limit.policy}";r={max(0, s.remaining)};t={math.ceil(s.reset_seconds)}'


_POLICIES: Memo[tuple[str, int], str] = Memo()
_PAIRS: Memo[tuple[Limit, Limit], str] = Memo()  # the usual two limits' policy field, whole
