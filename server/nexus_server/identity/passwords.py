"""The password policy and bcrypt hashing, run off the event loop.

bcrypt releases the GIL while it hashes, so a small dedicated pool (one thread per core this
process may run on) lets a login storm use every core without starving the default executor
or the event loop. The pool's threads also run at a lower scheduling priority (nice +10 on
Linux): when the event loop has work (other RPCs, the logins' own database steps) the kernel
gives it the CPU first, so a storm of logins does not stretch everyone else's latency, and
when it has none the hashes still get every cycle.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TypeVar

import bcrypt

from nexus_server.common.errors import FieldViolation, InvalidArgument

MIN_LENGTH = 12
MAX_BYTES = 72  # bcrypt's limit; longer inputs are refused, never cut short
T = TypeVar("T")
SYMBOLS_HINT = "a symbol (anything but a letter, digit or space)"
HASHER_NICENESS = 10


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity mask), not all the machine has."""
    with contextlib.suppress(AttributeError, OSError):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 2


def _lower_priority() -> None:
    # Per-thread niceness (Linux): a pool thread yields the CPU to the event loop's thread.
    with contextlib.suppress(AttributeError, OSError, PermissionError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASHER_NICENESS)


def check_length(password: str, field: str) -> None:
    """Refuse inputs bcrypt cannot hash whole (also for passwords only being checked)."""
    if len(password.encode()) > MAX_BYTES:
        raise InvalidArgument(
            FieldViolation(field, f"must be at most {MAX_BYTES} bytes of UTF-8"), reason="PASSWORD_TOO_LONG"
        )


def check_policy(password: str, field: str) -> None:
    """A new password: ≥ 12 characters with upper, lower, digit and symbol; ≤ 72 bytes."""
    check_length(password, field)
    missing = []
    if len(password) < MIN_LENGTH:
        missing.append(f"at least {MIN_LENGTH} characters")
    if not any(c.isupper() for c in password):
        missing.append("an upper-case letter")
    if not any(c.islower() for c in password):
        missing.append("a lower-case letter")
    if not any(c.isdigit() for c in password):
        missing.append("a digit")
    if not any(not c.isalnum() and not c.isspace() for c in password):
        missing.append(SYMBOLS_HINT)
    if missing:
        raise InvalidArgument(
            FieldViolation(field, "needs " + ", ".join(missing)), reason="PASSWORD_TOO_WEAK"
        )


class Hasher:
    def __init__(self, rounds: int = 12, workers: int | None = None):
        self.rounds = rounds
        self._pool = ThreadPoolExecutor(
            max_workers=workers or usable_cores(), thread_name_prefix="bcrypt", initializer=_lower_priority
        )
        self._dummy: bytes | None = None

    async def hash(self, password: str) -> str:
        salt = bcrypt.gensalt(self.rounds)
        hashed = await self._run(bcrypt.hashpw, password.encode(), salt)
        return hashed.decode()

    async def verify(self, password: str, hashed: str | None) -> bool:
        """Check `password` against `hashed`; with no hash (unknown email) check a dummy of
        the same cost, so the answer takes as long either way."""
        if hashed is None:
            if self._dummy is None:
                self._dummy = await self._run(bcrypt.hashpw, b"dummy", bcrypt.gensalt(self.rounds))
            await self._run(bcrypt.checkpw, password.encode(), self._dummy)
            return False
        return bool(await self._run(bcrypt.checkpw, password.encode(), hashed.encode()))

    async def _run(self, fn: Callable[..., T], *args: bytes) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, partial(fn, *args))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
