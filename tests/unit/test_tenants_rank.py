"""The grant-and-take-away rule (actor.refusal): no one takes away more rank than they
have, and no one gives out what they do not hold."""

from __future__ import annotations

import pytest

from nexus_server.tenants.access import Standing
from nexus_server.tenants.actor import Actor, refusal
from nexus_server.tenants.permissions import ADMIN, BUILT_IN_PERMISSIONS, MEMBER, OWNER, READ_ONLY

PERSON = Actor("usr_actor")
MANAGER = "rol_manager"  # `member` plus managing members
ONLY_WRITE = "rol_only_write"  # managing members and nothing else
CUSTOM = {
    MANAGER: BUILT_IN_PERMISSIONS[MEMBER] | {"tenants.members.write"},
    ONLY_WRITE: frozenset({"tenants.members.write"}),
}


def held(*roles: str) -> Standing:
    return Standing(tuple(roles), (), (), {r: BUILT_IN_PERMISSIONS.get(r) or CUSTOM[r] for r in roles})


def of(*roles: str) -> dict[str, frozenset[str]]:
    return {r: BUILT_IN_PERMISSIONS.get(r) or CUSTOM[r] for r in roles}


def reason(actor_roles: tuple[str, ...], target: tuple[str, ...], *, taking: bool = True) -> str:
    denied = refusal(PERSON, held(*actor_roles), of(*target), taking=taking)
    return denied.reason if denied else ""


@pytest.mark.parametrize("target", [(OWNER,), (ADMIN,), (MEMBER, MANAGER), (READ_ONLY,)])
def test_an_owner_takes_away_anything(target: tuple[str, ...]) -> None:
    assert reason((OWNER,), target) == ""


def test_only_owners_take_away_owner() -> None:
    assert reason((ADMIN,), (OWNER, MEMBER)) == "ROLE_REQUIRED"
    assert reason((MANAGER,), (OWNER,)) == "ROLE_REQUIRED"


def test_an_admin_takes_away_every_role_but_owner() -> None:
    assert reason((ADMIN,), (ADMIN, MANAGER, READ_ONLY)) == ""


def test_a_custom_role_cannot_take_away_a_higher_rank() -> None:
    denied = refusal(PERSON, held(MANAGER), of(MEMBER, ADMIN), taking=True)
    assert denied is not None
    assert (denied.reason, denied.metadata["role"]) == ("INSUFFICIENT_RANK", ADMIN)
    assert denied.metadata["permission"] in BUILT_IN_PERMISSIONS[ADMIN] - CUSTOM[MANAGER]


def test_a_custom_role_takes_away_what_it_could_grant() -> None:
    assert reason((MANAGER,), (MEMBER,)) == ""
    assert reason((MANAGER,), (READ_ONLY, MANAGER)) == ""
    assert reason((MEMBER, ONLY_WRITE), (MEMBER, ONLY_WRITE)) == ""


def test_a_permission_alone_does_not_outrank_the_roles_it_lacks() -> None:
    # Managing members is not holding what members hold: it cannot take `member` away.
    assert reason((ONLY_WRITE,), (MEMBER,)) == "INSUFFICIENT_RANK"


def test_granting_what_one_lacks_keeps_its_own_reason() -> None:
    assert reason((MANAGER,), (ADMIN,), taking=False) == "PERMISSION_NOT_HELD"
    assert reason((ADMIN,), (OWNER,), taking=False) == "ROLE_REQUIRED"
    assert reason((MANAGER,), (MEMBER,), taking=False) == ""


def test_nothing_to_take_away_is_always_allowed() -> None:
    # A custom role deleted meanwhile grants nothing and is absent from the mapping.
    assert refusal(PERSON, held(READ_ONLY), {}, taking=True) is None


def test_a_non_member_takes_away_nothing() -> None:
    denied = refusal(PERSON, None, of(READ_ONLY), taking=True)
    assert denied is not None and denied.reason == "INSUFFICIENT_RANK"


@pytest.mark.parametrize("actor", [Actor(), Actor("usr_admin", platform_admin=True)])
def test_the_operator_and_platform_admins_are_not_limited(actor: Actor) -> None:
    assert refusal(actor, None, of(OWNER, ADMIN), taking=True) is None
