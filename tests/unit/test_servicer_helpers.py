"""The small rules the servicers hand their calls to, now that they no longer hold them:
who may grant what, which charge is a key's own, what a stream's view lets through."""

from __future__ import annotations

from datetime import UTC, datetime

from nexus_server.apikeys import answers, rules
from nexus_server.auth.principal import Principal, PrincipalKind
from nexus_server.db.uow import StoredEvent
from nexus_server.events import subscription, visibility
from nexus_server.events.hub import Entry
from nexus_server.ratelimit.limits import Decision, Limit, LimitState

PERSON = Principal(PrincipalKind.USER, "usr_1", tenant_id="ten_1")
KEY = Principal(PrincipalKind.API_KEY, "eco_api_1", tenant_id="ten_1", scopes=frozenset({"apikeys:write"}))


def test_a_person_may_grant_any_scope_and_a_key_only_its_own() -> None:
    assert rules.grantor_of(PERSON) is rules.ANY_SCOPE
    assert rules.grantor_of(KEY) == frozenset({"apikeys:write"})
    assert rules.grantor_of(None) == frozenset()


def test_only_a_calling_keys_own_charge_is_its_own() -> None:
    own = LimitState(Limit("apikey", "apikey:eco_api_1", 60), 59, 1.0, True)
    tenant = LimitState(Limit("tenant", "tenant:ten_1", 600), 599, 1.0, True)
    decision = Decision(True, (tenant, own), 0.0)
    assert answers.own_charge(decision, KEY) == own
    assert answers.own_charge(decision, PERSON) is None
    assert answers.own_charge(None, KEY) is None
    assert answers.own_charge(Decision(True, (tenant,), 0.0), KEY) is None


def _entry(type: str, source: str = visibility.NEXUS_SOURCE) -> Entry:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    event = StoredEvent("evt_1", "ten_1", 1, type, source, "", now, {}, None, now)
    return Entry(event, lambda e: (e.type.encode(), 1))


def test_a_narrowed_view_lets_through_only_what_its_reader_may_see() -> None:
    view = visibility.View(())
    member, deal = _entry("member.added"), _entry("deal.won", "crm")
    assert subscription.visible(member, view) is member  # not narrowed: the filter decided
    view.update(("member.",))
    assert subscription.visible(member, view) is None
    assert subscription.visible(deal, view) is deal
    batch = subscription.visible(subscription.Batch([member, deal]), view)
    assert isinstance(batch, subscription.Batch) and batch.entries == [deal]
    assert subscription.visible(subscription.Batch([member]), view) is None
