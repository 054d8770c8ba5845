"""What a limiter is asked and what it answers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

from nexus_server.common.memo import Memo
from nexus_server.ratelimit import gcra


# NamedTuples, not dataclasses: each call builds several of these, and a tuple is built in
# a fraction of a frozen dataclass's time.
class Limit(NamedTuple):
    """One limit that applies to a call: `policy` names it in headers and errors (`apikey`,
    `user`, `tenant`), `key` is its counter (`apikey:eco_api_…`)."""

    policy: str
    key: str
    per_minute: int


class LimitState(NamedTuple):
    limit: Limit
    remaining: int
    reset_seconds: float
    allowed: bool  # whether this limit alone would have admitted the call


class Decision(NamedTuple):
    """All limits of one call: admitted (and every limit charged) or not (none charged)."""

    allowed: bool
    states: tuple[LimitState, ...]
    retry_after: float  # seconds until the call would be admitted; 0 when admitted

    @property
    def refused_by(self) -> tuple[LimitState, ...]:
        return tuple(s for s in self.states if not s.allowed)


class Backend(Protocol):
    async def charge(self, limits: Sequence[Limit], cost: int) -> Decision:
        """Check every limit; charge all of them if all admit the cost, none otherwise."""
        ...


class BackendUnavailable(Exception):
    """The shared counter store could not be reached."""


def evaluate(limits: Sequence[Limit], tats: Sequence[int], now: int, cost: int) -> tuple[Decision, list[int]]:
    """The decision for `limits` whose stored TATs are `tats`, and the TATs to store if it
    admits the call. A refused call charges nothing, so limits that would have admitted it
    report their uncharged state."""
    # The admitting path (nearly every call) with gcra.admit's arithmetic written out, so
    # that no intermediate Outcome is built, and the tuples built directly (a NamedTuple's
    # own constructor is a Python function: it costs twice the tuple).
    states = []
    new_tats = []
    for lim, stored in zip(limits, tats, strict=True):
        shape = _SHAPES.get(lim.per_minute)
        if shape is None:
            shape = _shape(lim.per_minute)
        period, window = shape
        new_tat = (stored if stored > now else now) + cost * period
        if new_tat - now > window:
            return _refused(limits, tats, now, cost)
        new_tats.append(new_tat)
        states.append(
            _tuple(LimitState, (lim, (window - (new_tat - now)) // period, (new_tat - now) / 1e6, True))
        )
    return _tuple(Decision, (True, tuple(states), 0.0)), new_tats


_tuple = tuple.__new__
# per_minute → (µs one call adds to the TAT, the window in µs): limits are few, calls many.
_SHAPES: Memo[int, tuple[int, int]] = Memo()


def _shape(per_minute: int) -> tuple[int, int]:
    period = gcra.period_us(per_minute)
    return _SHAPES.put(per_minute, (period, period * per_minute))


def _refused(limits: Sequence[Limit], tats: Sequence[int], now: int, cost: int) -> tuple[Decision, list[int]]:
    outcomes = [gcra.admit(tat, now, lim.per_minute, cost) for lim, tat in zip(limits, tats, strict=True)]
    outcomes = [
        o if not o.allowed else gcra.admit(tat, now, lim.per_minute, 0)
        for lim, tat, o in zip(limits, tats, outcomes, strict=True)
    ]
    states = tuple(
        LimitState(lim, o.remaining, o.reset_us / 1e6, o.allowed)
        for lim, o in zip(limits, outcomes, strict=True)
    )
    retry = max(o.retry_us for o in outcomes if not o.allowed)
    return Decision(False, states, retry / 1e6), [o.new_tat for o in outcomes]
