"""Verifying full API keys on the auth path, from a cache that every replica keeps fresh.

A key's text is checked first (prefix, length, alphabet, CRC32 checksum): a mistyped or
forged string is refused with no cache or database work. Then the key's record comes from
an in-memory cache (one database read per key per `ttl`; concurrent misses of a key share
it, and the misses that arrive while a read is out are read together in the next); the
digest is compared in constant time with the current secret's and, during a rotation's
grace, the previous one's. Revoke, rotate and update write to the revocation feed, whose
listener drops the cached record on every replica within its poll interval; the TTL is the
backstop, and expiry is compared with the clock on every call.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from contextvars import ContextVar
from dataclasses import dataclass, replace
from datetime import datetime

from nexus_server.apikeys import key_format, rules, store
from nexus_server.apikeys.last_used import LastUsed
from nexus_server.apikeys.store import ApiKeyRow
from nexus_server.apikeys.workflows import FEED_KIND
from nexus_server.auth.principal import Principal, PrincipalKind
from nexus_server.auth.revocations import Revocations
from nexus_server.common.errors import Unauthenticated
from nexus_server.common.memo import Memo
from nexus_server.common.pacing import Pacer
from nexus_server.db.uow import Database

MAX_BATCH = 500  # keys read in one query
MAX_READERS = 1  # one read out at a time: measured best (each read costs its own CPU)
MAX_PRESENTED = 10_000  # keys remembered as matched (see KeyVerifier._presented)
MAX_ABSENT = 10_000  # ids remembered as having no key (see KeyVerifier._absent)
MALFORMED = "malformed"
NOT_FOUND = "not_found"


@dataclass(frozen=True)
class Check:
    """The outcome of checking a key's text and secret. `row` is set once the secret matched."""

    outcome: str  # malformed | not_found | active | revoked | expired
    row: ApiKeyRow | None = None
    previous: bool = False  # matched the previous secret of a rotation, in its grace


@dataclass(frozen=True)
class _Entry:
    row: ApiKeyRow | None
    principal: Principal | None
    fetched: float
    # The answer for the current secret of an active key, built once (the usual answer).
    active: Check | None = None


def _entry_of(row: ApiKeyRow | None, fetched: float) -> _Entry:
    if row is None:
        return _Entry(None, None, fetched)
    return _Entry(row, _principal(row), fetched, Check(rules.ACTIVE, row))


_MALFORMED = Check(MALFORMED)
_NOT_FOUND = Check(NOT_FOUND)

# The key that authenticated the current call, its id, the cache entry its secret matched
# and the check authentication reached: when the call then asks about that same key
# (VerifyApiKey on the caller's own key), the answer is that check, with no second parse,
# hash or clock read. Each RPC runs in its own task, so this is per call.
_authenticated: ContextVar[tuple[str, str, _Entry, Check] | None] = ContextVar("nexus_api_key", default=None)


class KeyVerifier:
    def __init__(
        self,
        db: Database,
        revocations: Revocations,
        last_used: LastUsed,
        *,
        ttl: float = 10.0,
        max_absent: int = MAX_ABSENT,
    ):
        self.db = db
        self.clock = db.clock
        self.revocations = revocations
        self.last_used = last_used
        self.ttl = ttl
        # Records of keys that exist: as many as the database holds, which only a signed-in
        # caller can grow.
        self._cache: dict[str, _Entry] = {}
        # Ids that have no key. Anyone can present a well-formed key (the checksum is public),
        # so this one is bounded, and apart from the first: a flood of made-up ids clears only
        # other made-up ids, never sends real keys back to the database.
        self._absent: Memo[str, _Entry] = Memo(max_absent)
        self._loading: dict[str, asyncio.Future[_Entry]] = {}
        self._queued: list[str] = []  # keys whose records the reader is to read next
        self._readers: set[asyncio.Task[None]] = set()
        # Bumped by every invalidation: a read that started before one is not cached.
        self._epoch = 0
        # Full keys that matched a cached record, and whether as the previous secret: the
        # next call with the same key, while that very record is still cached, skips the
        # checksum and the SHA-256 (a third of verifying). Only successful matches enter, so
        # guessing cannot grow it; it lives in memory beside the records, like them is never
        # written anywhere, and is dropped whole when it reaches MAX_PRESENTED. A lookup
        # compares a guess's text only after its (keyed, per-process) hash matched, so it
        # gives no timing signal about a key.
        self._presented: Memo[str, tuple[_Entry, bool]] = Memo(MAX_PRESENTED)
        revocations.on_revoke(self._invalidate)

    def _invalidate(self, kind: str, subject: str) -> None:
        if kind == FEED_KIND:
            self._epoch += 1
            self._cache.pop(subject, None)
            self._absent.pop(subject, None)

    def invalidate_all(self) -> None:
        self._epoch += 1
        self._cache.clear()
        self._absent.clear()
        self._presented.clear()

    def _cached(self, key_id: str) -> _Entry | None:
        return self._cache.get(key_id) or self._absent.get(key_id)

    async def _entry(self, key_id: str) -> _Entry:
        entry = self._cached(key_id)
        if entry is not None and time.monotonic() - entry.fetched < self.ttl:
            return entry
        future = self._loading.get(key_id)
        if future is None:
            future = self._loading[key_id] = asyncio.get_running_loop().create_future()
            self._queued.append(key_id)
            if len(self._readers) < MAX_READERS:
                reader = asyncio.get_running_loop().create_task(self._read_queued())
                self._readers.add(reader)
                reader.add_done_callback(self._readers.discard)
        # Shielded: a caller that gives up does not cancel the read others wait for.
        return await asyncio.shield(future)

    async def _read_queued(self) -> None:
        """Read queued keys, many in one query. At most MAX_READERS reads are out at once;
        the misses that arrive while they are go together in the next, so under load a
        database round trip (and its CPU) serves many calls rather than one, and at low
        load a miss is read at once."""
        me = asyncio.current_task()
        try:
            await asyncio.sleep(0)  # let the misses of this turn of the loop join the read
            while self._queued:
                batch, self._queued = self._queued[:MAX_BATCH], self._queued[MAX_BATCH:]
                await self._read(batch)
        finally:
            # Out of the count in the same step that saw the queue empty: the done callback
            # runs a turn later, and a miss in between would find the reader still counted,
            # start none, and wait until some other key missed (a call hung for minutes).
            if me is not None:
                self._readers.discard(me)
            if self._queued and not self._readers:
                # Cancelled with keys still queued and no other reader: nobody will read them.
                self._fail(self._queued, asyncio.CancelledError())
                self._queued = []

    async def _read(self, batch: list[str]) -> None:
        epoch = self._epoch
        # A batch is large when misses piled up behind a stall, and turning it into entries
        # is ~20 us a key: paced, so 500 of them do not hold the loop for 10 ms and make the
        # next pile larger still (the probe saw steps of 30 ms here).
        pacer = Pacer()
        try:
            if self.db.hot is not None:
                rows = await store.read_keys(self.db.hot, batch, pacer)
            else:
                async with self.db.unit_of_work(readonly=True) as uow:
                    rows = await store.get_keys(uow.session, batch)
        except BaseException as error:
            self._fail(batch, error)
            if not isinstance(error, Exception):
                raise
            return
        fetched = time.monotonic()
        try:
            async for part in pacer.slices(batch):
                for key_id in part:
                    self._keep(key_id, _entry_of(rows.get(key_id), fetched), epoch)
        except BaseException as error:  # cancelled in a pause: the rest are not left waiting
            self._fail(batch, error)
            raise

    def _keep(self, key_id: str, entry: _Entry, epoch: int) -> None:
        """Cache what a read found (unless an invalidation came since it began) and answer
        the calls waiting for it."""
        if epoch == self._epoch:
            if entry.row is not None:
                self._cache[key_id] = entry
            else:
                self._absent.put(key_id, entry)
        future = self._loading.pop(key_id, None)
        if future is not None and not future.done():
            future.set_result(entry)

    def _fail(self, batch: list[str], error: BaseException) -> None:
        for key_id in batch:
            future = self._loading.pop(key_id, None)
            if future is None or future.done():
                continue
            if isinstance(error, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(error)
                future.exception()  # retrieved: waiters re-raise it, nobody warns

    async def check(self, full_key: str) -> Check:
        """What this key is, without raising: for the auth path and VerifyApiKey alike."""
        same = _authenticated.get()
        if same is not None and same[0] == full_key and self._cache.get(same[1]) is same[2]:
            # This call was authenticated by this very key a moment ago, against the record
            # still cached: the answer is the one authentication reached for this call.
            return same[3]
        key_id = key_format.key_id_of(full_key)
        if key_id is None:
            return _MALFORMED
        entry = self._cached(key_id)
        if entry is None or time.monotonic() - entry.fetched >= self.ttl:
            entry = await self._entry(key_id)
        return self._match(entry, full_key)[0]

    def _match(self, entry: _Entry, full_key: str) -> tuple[Check, datetime | None]:
        """The check of `full_key` against its id's record (or its absence), and the time
        it was made at."""
        row = entry.row
        if row is None:
            return _NOT_FOUND, None
        now = self.clock.now()
        digest = key_format.digest(full_key)
        previous = False
        if not hmac.compare_digest(digest, row.secret_hash):
            if not (
                rules.previous_secret_live(row, now)
                and hmac.compare_digest(digest, row.previous_secret_hash or "")
            ):
                return _NOT_FOUND, now
            previous = True
        return self._state(entry, previous, now), now

    def _state(self, entry: _Entry, previous: bool, now: datetime) -> Check:
        """The check of a key whose secret matched `entry`'s record (the previous secret if
        `previous`)."""
        row = entry.row
        assert row is not None
        if previous and not rules.previous_secret_live(row, now):
            return _NOT_FOUND
        if self.revocations.is_revoked(FEED_KIND, row.id):
            return Check(rules.REVOKED, row, previous)
        state = rules.state_of(row, now)
        if state == rules.ACTIVE and not previous and entry.active is not None:
            return entry.active
        return Check(state, row, previous)

    def cached_count(self) -> tuple[int, int]:
        """(records of keys, ids known to have none) held in memory."""
        return len(self._cache), len(self._absent)

    def note_use(self, key_id: str, when: datetime | None = None) -> None:
        self.last_used.note(key_id, when or self.clock.now())

    def cached_row(self, key_id: str) -> ApiKeyRow | None:
        """The record the last verification used (the rate-limit layer reads its limit)."""
        entry = self._cache.get(key_id)
        return entry.row if entry else None

    def cached_rate_limit(self, key_id: str) -> int | None:
        """`rate_limit_of` when the record is cached (as it is right after verification)."""
        entry = self._cache.get(key_id)
        if entry is None:
            return None
        return entry.row.rate_limit_per_minute if entry.row else rules.DEFAULT_RATE_LIMIT

    async def rate_limit_of(self, key_id: str) -> int:
        """The key's calls per minute, from the cache the verification just filled."""
        entry = self._cached(key_id)
        if entry is None:
            entry = await self._entry(key_id)
        return entry.row.rate_limit_per_minute if entry.row else rules.DEFAULT_RATE_LIMIT

    def _remembered(self, key: str) -> Principal | None:
        """The principal of a key that matched the record still cached, if it is still active."""
        seen = self._presented.get(key)
        if seen is None:
            return None
        entry, previous = seen
        row = entry.row
        if (
            row is None
            or self._cache.get(row.id) is not entry
            or time.monotonic() - entry.fetched >= self.ttl
        ):
            return None
        now = self.clock.now()
        state = self._state(entry, previous, now)
        if state.outcome != rules.ACTIVE:
            return None  # revoked, expired or out of its grace: the full path says which
        self.last_used.note(row.id, now)
        _authenticated.set((key, row.id, entry, state))
        return _presented_as(entry, row, previous)

    async def verify_api_key(self, key: str) -> Principal:
        """The KeyVerifier port of the authentication layer."""
        remembered = self._remembered(key)
        if remembered is not None:
            return remembered
        key_id = key_format.key_id_of(key)
        if key_id is None:
            raise Unauthenticated(_MESSAGES[MALFORMED], reason="CREDENTIALS_INVALID")
        entry = self._cached(key_id)
        if entry is None or time.monotonic() - entry.fetched >= self.ttl:
            entry = await self._entry(key_id)
        result, now = self._match(entry, key)
        row = result.row
        if result.outcome == rules.ACTIVE and row is not None and now is not None:
            self.last_used.note(row.id, now)
            _authenticated.set((key, row.id, entry, result))
            self._presented.put(key, (entry, result.previous))
            return _presented_as(entry, row, result.previous)
        raise Unauthenticated(
            _MESSAGES.get(result.outcome, "the API key is not valid"), reason="CREDENTIALS_INVALID"
        )


_MESSAGES = {
    MALFORMED: "the API key is malformed or its checksum does not match",
    NOT_FOUND: "the API key is not valid",
    rules.REVOKED: "the API key has been revoked",
    rules.EXPIRED: "the API key has expired",
}


def _presented_as(entry: _Entry, row: ApiKeyRow, previous: bool) -> Principal:
    """The principal of a key presented with its current secret, or with the previous one
    during a rotation's grace, whose credential ends with the grace (an open stream ends
    then: interceptors/streams.py)."""
    principal = entry.principal or _principal(row)
    grace = row.previous_secret_expire_time
    if not previous or grace is None:
        return principal
    end = grace if row.expire_time is None else min(grace, row.expire_time)
    return replace(principal, expires_at=end)


def _principal(row: ApiKeyRow) -> Principal:
    return Principal(
        kind=PrincipalKind.API_KEY,
        subject=row.id,
        tenant_id=row.tenant_id,
        scopes=frozenset(row.scopes),
        expires_at=row.expire_time,
    )
