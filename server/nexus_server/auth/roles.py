"""The built-in roles and their rank: the one ordering every access decision uses.

Custom roles have no rank of their own; they reach admin RPCs only through the permissions
they name (see `authorization.role_allows`) and never reach owner RPCs.
"""

from __future__ import annotations

from collections.abc import Iterable

OWNER, ADMIN, MEMBER, READ_ONLY = "owner", "admin", "member", "read_only"
BUILT_IN_ROLES = (OWNER, ADMIN, MEMBER, READ_ONLY)
RANK = {READ_ONLY: 0, MEMBER: 1, ADMIN: 2, OWNER: 3}
NO_RANK = -1  # custom roles only


def best_rank(roles: Iterable[str]) -> int:
    """The rank of the highest built-in role among `roles`, NO_RANK if none is built in."""
    return max((RANK.get(role, NO_RANK) for role in roles), default=NO_RANK)
