"""Which of Nexus's own events a reader may see: no more than its other RPCs would show it.

Reading the log (`events:subscribe`, or any member) must not be a side door to what a
permission guards elsewhere: `invitation.created` carries the invitee's email and
`member.added` the roster, which ListMembers shows only to holders of
`tenants.members.read`. So each family of Nexus's events (source `nexus`, which no one
else may publish: envelope.py) that tells of such things declares the permission a person
needs to see it, and the key scope a program needs ("" when the matching RPCs refuse every
key, as the tenant-administration ones do). Subscribe, ListEvents and GetEvent leave out
what the reader lacks; a platform administrator sees everything. Families not listed are
seen by every reader of the log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from nexus_server.auth.ports import TenantDirectory
from nexus_server.auth.principal import Principal

NEXUS_SOURCE = "nexus"


@dataclass(frozen=True)
class Restriction:
    permission: str  # the permission a person needs (tenants/permissions.py)
    key_scope: str = ""  # the scope a key needs; "" when no key may see the family


# Type prefix (whole segments, ending in ".") → who may read the family; the permissions are
# those of the List RPC that shows the same facts (ListMembers, ListGroups, ListRoles,
# ListProjectAccess), none of which a key may call.
RESTRICTED: dict[str, Restriction] = {
    "invitation.": Restriction("tenants.members.read"),
    "member.": Restriction("tenants.members.read"),
    "group.": Restriction("tenants.groups.read"),
    "role.": Restriction("tenants.roles.read"),
    "project_access.": Restriction("tenants.project_access.read"),
}


def hidden_for(principal: Principal, permissions: frozenset[str]) -> tuple[str, ...]:
    """The type prefixes of Nexus's events that `principal` may not see, sorted:
    `permissions` are a person's in the tenant (a key's scopes are its own)."""
    if principal.platform_admin:
        return ()
    hidden = []
    for prefix, rule in RESTRICTED.items():
        if principal.is_user:
            allowed = rule.permission in permissions
        else:
            allowed = bool(rule.key_scope) and principal.has_scope(rule.key_scope)
        if not allowed:
            hidden.append(prefix)
    return tuple(sorted(hidden))


async def hidden_from(
    directory: TenantDirectory | None, principal: Principal, tenant_id: str
) -> tuple[str, ...]:
    """What of Nexus's own events `principal` may not read in `tenant_id`: hidden_for with
    the person's permissions there, as the tenant directory knows them."""
    membership = None
    if principal.is_user and not principal.platform_admin and directory is not None:
        membership = await directory.membership(principal.user_id, tenant_id)
    return hidden_for(principal, membership.permissions if membership else frozenset())


def is_hidden(type: str, source: str, hidden: tuple[str, ...]) -> bool:
    """Whether an event of `type` from `source` is among what `hidden` leaves out."""
    return bool(hidden) and source == NEXUS_SOURCE and type.startswith(hidden)


class View:
    """What one open stream may show, narrowed while it runs when its reader loses a
    permission (the stream's filter left out what was hidden when it opened)."""

    def __init__(self, hidden: tuple[str, ...]):
        self.hidden = hidden
        self.narrowed = False

    def update(self, hidden: tuple[str, ...]) -> None:
        if set(hidden) - set(self.hidden):
            self.narrowed = True
        # Never widened mid-stream: the filter already skipped what was hidden (reconnect).
        self.hidden = tuple(sorted(set(self.hidden) | set(hidden)))

    def hides(self, type: str, source: str) -> bool:
        return self.narrowed and is_hidden(type, source, self.hidden)


class Readmissions(Protocol):
    """An open stream's re-admissions (interceptors/streams.py's Watch): each time a
    membership or role change has the stream's credential checked again."""

    def on_admitted(self, listener: Callable[[Principal], None]) -> None: ...


async def open_view(
    directory: TenantDirectory | None,
    principal: Principal,
    tenant_id: str,
    readmissions: Readmissions | None,
) -> View:
    """The view of a stream opened by `principal`, narrowed whenever a re-admission finds
    its reader holding less."""
    view = View(await hidden_from(directory, principal, tenant_id))
    if readmissions is None:
        return view
    tasks: set[asyncio.Task[None]] = set()

    async def refresh(again: Principal) -> None:
        view.update(await hidden_from(directory, again, tenant_id))

    def readmitted(again: Principal) -> None:
        task = asyncio.create_task(refresh(again))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    readmissions.on_admitted(readmitted)
    return view
