"""AIP-134 update masks, resolved the same way by every Update RPC."""

from __future__ import annotations

import pytest

from nexus_server.common.errors import InvalidArgument
from nexus_server.common.fieldmask import fields_to_update

UPDATABLE = ("name", "scopes", "expire_time")


def test_no_mask_means_the_fields_the_request_sets() -> None:
    given = {"name": "crm", "scopes": [], "expire_time": True}
    assert fields_to_update([], UPDATABLE, given) == ["name", "expire_time"]


def test_star_means_every_updatable_field_even_cleared_ones() -> None:
    assert fields_to_update(["*"], UPDATABLE, {}) == list(UPDATABLE)


def test_a_mask_names_exactly_its_fields_once_in_order() -> None:
    assert fields_to_update(["scopes", "name", "scopes"], UPDATABLE, {}) == ["scopes", "name"]


def test_a_field_that_cannot_be_updated_is_refused_naming_what_can() -> None:
    with pytest.raises(InvalidArgument) as raised:
        fields_to_update(["name", "id", "secret_hash"], UPDATABLE, {})
    assert raised.value.reason == "UPDATE_MASK_INVALID"
    assert [v.field for v in raised.value.violations] == ["update_mask", "update_mask"]
    assert (
        "`id` cannot be updated; updatable: name, scopes, expire_time"
        in raised.value.violations[0].description
    )
