"""common/validation.py: every violation of a request comes back at once."""

from __future__ import annotations

import pytest

from nexus_server.common.errors import FieldViolation, InvalidArgument, NotFound
from nexus_server.common.validation import Violations


def test_every_violation_is_raised_together_in_order() -> None:
    with pytest.raises(InvalidArgument) as raised, Violations() as bad:
        bad.add("name", "is required")
        bad.extend([FieldViolation("scopes[1]", "unknown scope")])
        assert bad and len(bad) == 2 and bad.has("name") and not bad.has("scopes")
    assert raised.value.violations == [
        FieldViolation("name", "is required"),
        FieldViolation("scopes[1]", "unknown scope"),
    ]
    assert raised.value.reason == "INVALID_REQUEST"


def test_nothing_is_raised_when_nothing_is_wrong_and_a_reason_can_be_named() -> None:
    with Violations() as bad:
        pass
    assert not bad and bad.found == ()
    named = Violations(reason="UNKNOWN_ROLE")
    named.add("roles[0]", "is not a role of this tenant")
    with pytest.raises(InvalidArgument) as raised:
        named.raise_if_any()
    assert raised.value.reason == "UNKNOWN_ROLE"


def test_an_error_raised_inside_the_block_is_not_replaced() -> None:
    with pytest.raises(NotFound), Violations() as bad:
        bad.add("name", "is required")
        raise NotFound("gone")
