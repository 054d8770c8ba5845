"""Brute-force protection for sign-in, counted in the database so every replica shares it.

Failures slow down whoever makes them, not the account's owner (the Keycloak and Auth0
guidance): ten wrong passwords from one address must not lock the owner out everywhere.
Every attempt is counted *before* its password is checked and forgiven only if it proves
right, so parallel guesses cannot slip past a limit while their hashes run. The counters:

- per email *and* client address (the pair): the first `free_attempts` go at once, then
  each next attempt must wait 1, 2, 4 … seconds (capped), and at `lock_after` failures
  the pair is locked for `lock_for`. The owner at another address is not affected. The
  counter moves by compare-and-set, so each value is taken by exactly one attempt however
  many race.
- per email from every address (against guessing spread over many addresses): past
  `spread_after` failures in the window, attempts from devices the account has not signed
  in from before are paced (each waits up to `spread_max_delay`); the owner's known devices
  are never held back, and nothing ever locks the account itself.
- per client address: a plain atomic counter; past `address_limit` failures in the window
  the address is throttled until the window ends.
- sign-ups per client address, the same way: every Register is counted before its password
  is hashed (a bcrypt run is the costliest thing an anonymous caller can ask for), and past
  `signup_limit` in the window the address waits for the window to end.

Counts older than `window` start over. A right password clears the email's counters and
gives back the address's one; a password reset clears every counter of the email.
Unknown emails are counted exactly like known ones, so no answer tells them apart.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from nexus_server.common.errors import QuotaViolation, ResourceExhausted
from nexus_server.db.uow import Database, UnitOfWork
from nexus_server.identity import store

_CAS_TRIES = 64


@dataclass(frozen=True)
class _Next:
    """What an attempts row becomes when one more failure is counted."""

    failures: int
    next_attempt_time: datetime
    locked_until: datetime | None


@dataclass(frozen=True)
class Policy:
    free_attempts: int = 5
    max_delay: timedelta = timedelta(minutes=5)
    lock_after: int = 10
    lock_for: timedelta = timedelta(minutes=15)
    address_limit: int = 100
    window: timedelta = timedelta(minutes=15)
    signup_limit: int = 30
    spread_after: int = 50
    spread_max_delay: timedelta = timedelta(seconds=30)

    def spread_delay_after(self, failures: int) -> timedelta:
        """The pace for unknown devices once an email's failures from all addresses pass
        `spread_after`: the guessing slows to a crawl, the owner waits seconds at most."""
        if failures <= self.spread_after:
            return timedelta(0)
        return min(timedelta(seconds=2 ** min(failures - self.spread_after, 30)), self.spread_max_delay)

    def delay_after(self, failures: int) -> timedelta:
        if failures < self.free_attempts:
            return timedelta(0)
        return min(timedelta(seconds=2 ** min(failures - self.free_attempts, 30)), self.max_delay)


@dataclass(frozen=True)
class Ticket:
    """An admitted attempt: the counters it moved, to clear or give back."""

    pair_key: str
    email_key: str
    address_key: str


def _email_hash(email: str) -> str:
    # Keeps the pair key inside the column (email 254 + IPv6 address would not fit).
    return hashlib.sha256(email.encode()).hexdigest()[:32]


def _pair_key(email: str, address: str) -> str:
    return f"pair:{_email_hash(email)}:{address}"


def _throttled(reason: str, retry_after: timedelta, subject: str, what: str) -> ResourceExhausted:
    seconds = max(1, int(retry_after.total_seconds() + 0.999))
    return ResourceExhausted(
        f"{what}; retry in {seconds} s",
        retry_after=timedelta(seconds=seconds),
        violations=[QuotaViolation(subject, what)],
        reason=reason,
    )


class Throttle:
    def __init__(self, db: Database, policy: Policy | None = None):
        self.db = db
        self.policy = policy or Policy()

    async def admit(self, email: str, address: str = "", *, known_device: bool = False) -> Ticket:
        """Count one attempt for `email` (and `address`), or raise RESOURCE_EXHAUSTED."""
        async with self.db.unit_of_work() as uow:
            return await self.admit_in(uow, email, address, known_device=known_device)

    async def admit_in(
        self, uow: UnitOfWork, email: str, address: str = "", *, known_device: bool = False
    ) -> Ticket:
        """`admit` inside the caller's transaction (so a sign-in reads its user in the same
        one). A refusal raises, and the caller's rollback takes back the counts it made.
        `known_device`: the account has signed in from this device before, so the pacing of
        guesses spread over many addresses does not hold it back."""
        pair_key = _pair_key(email, address)
        email_key = f"email:{email}"
        address_key = f"ip:{address}" if address else ""
        # Always address, pair, email, here and in `succeeded_in`: one lock order, so
        # concurrent sign-ins cannot deadlock on PostgreSQL.
        if address_key:
            await self._admit_address(uow, address_key)
        await self._admit_pair(uow, pair_key)
        await self._admit_spread(uow, email_key, held_back=not known_device)
        return Ticket(pair_key, email_key, address_key)

    async def succeeded(self, ticket: Ticket) -> None:
        async with self.db.unit_of_work() as uow:
            await self.succeeded_in(uow, ticket)

    async def succeeded_in(self, uow: UnitOfWork, ticket: Ticket) -> None:
        """Clear the email's counts and give back the address's one, in the caller's
        transaction (a sign-in's session start). Rows are reset, not deleted, so the next
        attempt finds them and needs no INSERT."""
        now = uow.clock.now()
        if ticket.address_key:
            await store.add_attempts(uow.session, ticket.address_key, -1, now)
        await store.reset_attempts(uow.session, ticket.pair_key, now)
        await store.reset_attempts(uow.session, ticket.email_key, now)

    async def forgive(self, ticket: Ticket) -> None:
        """Undo the attempt's counts without clearing earlier failures (right password,
        second factor still needed)."""
        async with self.db.unit_of_work() as uow:
            now = uow.clock.now()
            if ticket.address_key:
                await store.add_attempts(uow.session, ticket.address_key, -1, now)
            await store.add_attempts(uow.session, ticket.pair_key, -1, now)
            await store.add_attempts(uow.session, ticket.email_key, -1, now)

    async def clear(self, email: str) -> None:
        """Forget every count of `email`, from every address (after a password reset: the
        owner proved control of the mailbox and signs in at once, wherever they are)."""
        async with self.db.unit_of_work() as uow:
            await store.clear_attempts(uow.session, f"email:{email}")
            await store.clear_attempts_with_prefix(uow.session, f"pair:{_email_hash(email)}:")

    async def _admit_pair(self, uow: UnitOfWork, key: str) -> None:
        """The escalating delay and the lock, for one email from one address."""
        policy = self.policy

        def step(row: store.AttemptRow, now: datetime) -> _Next:
            failures = row.failures
            if row.locked_until is not None and row.locked_until > now:
                raise _throttled(
                    "ACCOUNT_LOCKED",
                    row.locked_until - now,
                    "email",
                    "too many failed sign-ins for this email from this address: locked",
                )
            if row.locked_until is None and row.next_attempt_time > now:
                raise _throttled(
                    "LOGIN_THROTTLED",
                    row.next_attempt_time - now,
                    "email",
                    "sign-in attempts for this email come too fast",
                )
            if now - row.last_failure_time > policy.window or row.locked_until is not None:
                failures = 0  # an old streak, or a lock that has run out: start over
            counted = failures + 1
            locked = now + policy.lock_for if counted >= policy.lock_after else None
            return _Next(counted, now + policy.delay_after(counted), locked)

        await self._count_failure(uow, key, step)

    async def _admit_spread(self, uow: UnitOfWork, key: str, *, held_back: bool) -> None:
        """The email's failures from every address: paces unknown devices past
        `spread_after`, never locks, and never holds back a known device (it is counted)."""
        policy = self.policy

        def step(row: store.AttemptRow, now: datetime) -> _Next:
            if held_back and row.next_attempt_time > now:
                raise _throttled(
                    "LOGIN_THROTTLED",
                    row.next_attempt_time - now,
                    "email",
                    "sign-ins for this email fail from many addresses: new devices must wait",
                )
            failures = 0 if now - row.last_failure_time > policy.window else row.failures
            counted = failures + 1
            return _Next(counted, now + policy.spread_delay_after(counted), None)

        await self._count_failure(uow, key, step)

    async def _count_failure(
        self, uow: UnitOfWork, key: str, step: Callable[[store.AttemptRow, datetime], _Next]
    ) -> None:
        """Count one more failure on `key`: `step` refuses the attempt (raises) or says what
        the row becomes, and the row is swapped only if no one counted in between.
        Retried in the same transaction: on PostgreSQL (READ COMMITTED) each statement sees
        the latest committed count, and under SQLite's BEGIN IMMEDIATE the swap cannot lose."""
        for _ in range(_CAS_TRIES):
            now = uow.clock.now()
            row = await self._row(uow, key, now)
            change = step(row, now)
            if await store.swap_attempts(
                uow.session,
                key,
                expected_failures=row.failures,
                failures=change.failures,
                now=now,
                next_attempt_time=change.next_attempt_time,
                locked_until=change.locked_until,
            ):
                return
        raise _throttled("LOGIN_THROTTLED", timedelta(seconds=1), "email", "too many concurrent sign-ins")

    @staticmethod
    async def _row(uow: UnitOfWork, key: str, now: datetime) -> store.AttemptRow:
        row = await store.get_attempts(uow.session, key)
        if row is None:
            # ON CONFLICT DO NOTHING: of concurrent first attempts one creates, all go on.
            await store.create_attempts(uow.session, key, now)  # `now`: not due later than now
            row = await store.get_attempts(uow.session, key)
            assert row is not None
        return row

    async def admit_signup(self, address: str) -> None:
        """Count a sign-up from `address` (before its hash), or raise RESOURCE_EXHAUSTED."""
        if not address:
            return
        async with self.db.unit_of_work() as uow:
            await self._count(
                uow,
                f"signup:{address}",
                self.policy.signup_limit,
                "SIGNUP_THROTTLED",
                "too many sign-ups from this address",
            )

    async def _admit_address(self, uow: UnitOfWork, key: str) -> None:
        await self._count(
            uow,
            key,
            self.policy.address_limit,
            "LOGIN_THROTTLED",
            "too many failed sign-ins from this address",
        )

    async def _count(self, uow: UnitOfWork, key: str, limit: int, reason: str, what: str) -> None:
        """One more on `key`'s counter in this window; past `limit` raise (the caller's
        rollback takes the count back)."""
        policy = self.policy
        now = uow.clock.now()
        row = await store.get_attempts(uow.session, key)
        if row is None:
            await store.create_attempts(uow.session, key, now)
        elif now - row.last_failure_time > policy.window:
            await store.reset_attempts(uow.session, key, now)
        counted = await store.add_attempts(uow.session, key, 1, now)
        if counted > limit:
            started = row.last_failure_time if row is not None else now
            raise _throttled(
                reason, max(started + policy.window - now, timedelta(seconds=1)), "client_address", what
            )
