"""GCRA (the generic cell rate algorithm) for per-minute limits, as plain arithmetic.

A limit of `q` calls per window `W` keeps one number per subject: the theoretical arrival
time (TAT) of the next call. Each call moves it on by `cost * W / q`; a call is admitted
while the TAT stays within `W` of now, so a fresh subject may spend its whole minute at
once and then one call every `W / q`. Times are integer microseconds. The Redis Lua script
mirrors `admit` line for line.
"""

from __future__ import annotations

from typing import NamedTuple

WINDOW_US = 60_000_000  # one minute


def period_us(per_minute: int) -> int:
    """Microseconds one call adds to the TAT (at least 1, whatever the limit)."""
    return max(1, WINDOW_US // max(1, per_minute))


class Outcome(NamedTuple):  # a tuple: made on every call, several times (cheap to build)
    allowed: bool
    new_tat: int  # what to store when the call is admitted and charged
    remaining: int  # calls still admissible now, after this charge when admitted
    reset_us: int  # until the allowance is whole again, with no further calls
    retry_us: int  # until a call of this cost would be admitted; 0 if admitted


def admit(stored_tat: int, now: int, per_minute: int, cost: int) -> Outcome:
    period = period_us(per_minute)
    window = period * per_minute  # == WINDOW_US up to rounding; keeps q calls exact
    tat = max(stored_tat, now)
    new_tat = tat + cost * period
    if new_tat - now <= window:
        return Outcome(True, new_tat, (window - (new_tat - now)) // period, new_tat - now, 0)
    return Outcome(False, tat, max(0, (window - (tat - now)) // period), tat - now, new_tat - now - window)
