"""Open streams end when their credential stops holding: on every replica, within a second.

A stream is authenticated once, when it opens, and may then live for hours; the caches the
authentication layer reads are kept right by the revocation feed (auth/revocations.py), but
nothing would ask them again. So every server stream with a principal is watched, from the
moment authentication admits it until it ends, under the names the feed uses:

    apikey      <key id>              revoke, rotate, update (tenant deletion revokes keys)
    session     <session id>          logout, session revoked, password change, user disabled
    user        <user id>             every token of the person
    tenant      <tenant id>           suspension, deletion, status or domain change
    membership  <tenant>/<user>, <tenant>/*   removal, role or group change

A feed row (applied here on commit, on other replicas on their next poll) names some
watches; each is authenticated again through the very layer that admitted it, whose caches
have already dropped what the row invalidated, and a refusal ends the stream with that
refusal's status and reason (UNAUTHENTICATED CREDENTIALS_INVALID, PERMISSION_DENIED
TENANT_SUSPENDED or TENANT_ACCESS_DENIED, ...). The credential's own end (a key's expire
time, an access token's `exp`, a rotated secret's grace) is a timer at that instant.

Ending is cooperative: the guard records the refusal and calls the stream's wakers, and the
stream raises it from where it waits (events/subscription.py); the chain checks it between
messages too. A stream that registered no waker is cancelled, and the chain reports the
refusal if the cancellation lands inside it.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable
from datetime import datetime

from nexus_server.auth.principal import Principal
from nexus_server.auth.revocations import Revocations
from nexus_server.common.clock import Clock
from nexus_server.common.errors import NexusError, PermissionDenied
from nexus_server.interceptors.auth import Authentication
from nexus_server.interceptors.call import Call

log = logging.getLogger("nexus.streams")

# Feed kinds, as the capabilities write them (a unit test holds these to their constants).
APIKEY = "apikey"  # apikeys/workflows.py FEED_KIND
SESSION = "session"  # identity/tokens.py SESSION
USER = "user"  # identity/tokens.py USER
TENANT = "tenant"  # tenants/cache.py TENANT
MEMBERSHIP = "membership"  # tenants/cache.py MEMBERSHIP

# A check that failed for a reason other than a refusal (the database away) is tried again
# after this long: the stream goes on meanwhile rather than end on an outage.
_RETRY_SECONDS = 0.5
# A timer that rings a little before the credential's end (the loop's clock and the wall
# clock drift apart) looks again after at least this long.
_MIN_DELAY = 0.01

Names = tuple[tuple[str, str], ...]


def names_of(principal: Principal, tenant_id: str) -> Names:
    """The feed (kind, subject) pairs that may change whether `principal` is still admitted
    to `tenant_id`."""
    if principal.is_user:
        names: list[tuple[str, str]] = [(USER, principal.user_id)]
        if principal.session_id:
            names.append((SESSION, principal.session_id))
        if tenant_id:
            names += [
                (TENANT, tenant_id),
                (MEMBERSHIP, f"{tenant_id}/{principal.user_id}"),
                (MEMBERSHIP, f"{tenant_id}/*"),
            ]
        return tuple(names)
    names = [(APIKEY, principal.key_id)]
    if tenant_id:
        names.append((TENANT, tenant_id))
    return tuple(names)


class Watch:
    """One open stream, as the guard follows it. `error` is set once, when it must end."""

    __slots__ = (
        "_admitted",
        "_wakers",
        "again",
        "call",
        "closed",
        "error",
        "names",
        "stream",
        "task",
        "timer",
    )

    def __init__(self, call: Call, stream: asyncio.Task[object] | None, names: Names):
        self.call = call
        self.stream = stream
        self.names = names
        self.error: NexusError | None = None
        self.closed = False
        self.again = False  # a check is due (a feed row or the timer came during the last one)
        self.task: asyncio.Task[None] | None = None  # the check in flight
        self.timer: asyncio.TimerHandle | None = None
        self._wakers: list[Callable[[], None]] = []
        self._admitted: list[Callable[[Principal], None]] = []

    def on_admitted(self, listener: Callable[[Principal], None]) -> None:
        """Call `listener` with the principal each time the stream is admitted again (what
        it may see may have narrowed: events/visibility.py)."""
        self._admitted.append(listener)

    def admitted(self, principal: Principal) -> None:
        for listener in self._admitted:
            listener(principal)

    def on_end(self, wake: Callable[[], None]) -> None:
        """Call `wake` when the stream must end (it then raises `error`)."""
        self._wakers.append(wake)
        if self.error is not None:
            wake()

    def raise_if_ended(self) -> None:
        if self.error is not None:
            raise self.error

    def end(self, error: NexusError) -> None:
        if self.closed or self.error is not None:
            return
        self.error = error
        if self._wakers:
            for wake in self._wakers:
                wake()
        elif self.stream is not None:
            self.stream.cancel()


class StreamGuard:
    """Every open stream of this process, by the feed names that concern it."""

    def __init__(self, revocations: Revocations, auth: Authentication, clock: Clock):
        self.auth = auth
        self.clock = clock
        self._by_name: dict[tuple[str, str], set[Watch]] = {}
        self.rows = 0  # feed rows seen: a stream admitted across one is checked again at once
        revocations.on_revoke(self._on_feed)

    def open_count(self) -> int:
        return len({w for watches in self._by_name.values() for w in watches})

    def watch(self, call: Call, stream: asyncio.Task[object] | None, *, rows_before: int) -> Watch | None:
        """Follow a stream that authentication has just admitted (None: nothing to follow).
        `rows_before`: `rows` when its authentication began."""
        principal: Principal | None = call.principal
        if principal is None:
            return None
        watch = Watch(call, stream, names_of(principal, call.tenant_id))
        for name in watch.names:
            self._by_name.setdefault(name, set()).add(watch)
        self._arm(watch, principal.expires_at)
        if self.rows != rows_before:
            # A row arrived while authentication ran: what it read may predate the row.
            self._check_soon(watch)
        return watch

    def close(self, watch: Watch) -> None:
        watch.closed = True
        if watch.timer is not None:
            watch.timer.cancel()
        if watch.task is not None and not watch.task.done():
            watch.task.cancel()
        for name in watch.names:
            watches = self._by_name.get(name)
            if watches is not None:
                watches.discard(watch)
                if not watches:
                    del self._by_name[name]

    def _on_feed(self, kind: str, subject: str) -> None:
        self.rows += 1
        for watch in list(self._by_name.get((kind, subject), ())):
            self._check_soon(watch)

    def _arm(self, watch: Watch, expires_at: datetime | None) -> None:
        """Ring at the credential's end, if it has one."""
        if watch.timer is not None:
            watch.timer.cancel()
            watch.timer = None
        if expires_at is None:
            return
        delay = max(_MIN_DELAY, (expires_at - self.clock.now()).total_seconds())
        watch.timer = asyncio.get_running_loop().call_later(delay, self._check_soon, watch)

    def _check_soon(self, watch: Watch) -> None:
        if watch.closed or watch.error is not None:
            return
        watch.again = True
        if watch.task is None or watch.task.done():
            # A context of its own: the check must not see (or set) the RPC's context
            # variables of whichever call happened to commit the feed row.
            watch.task = asyncio.get_running_loop().create_task(
                self._check(watch), context=contextvars.Context()
            )

    async def _check(self, watch: Watch) -> None:
        while watch.again and not watch.closed:
            watch.again = False
            try:
                principal = await self._admit_again(watch.call)
            except NexusError as refusal:
                watch.end(refusal)
                return
            except Exception:
                log.warning("re-checking an open stream's credential failed; retrying", exc_info=True)
                watch.again = True
                await asyncio.sleep(_RETRY_SECONDS)
                continue
            self._arm(watch, principal.expires_at)
            watch.admitted(principal)

    async def _admit_again(self, call: Call) -> Principal:
        """Authenticate and authorize the stream's request again, as the chain did when it
        opened; raises the refusal it would meet now."""
        again = Call(call.method, call.context, call.metadata, request=call.request)
        await self.auth.before(again)
        if again.tenant_id != call.tenant_id:
            raise PermissionDenied(
                f"this stream's credentials no longer select tenant {call.tenant_id}",
                reason="TENANT_ACCESS_DENIED",
            )
        return again.require_principal()
