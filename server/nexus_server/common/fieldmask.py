"""Which fields an Update RPC changes, from its `update_mask` (AIP-134)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from nexus_server.common.errors import FieldViolation, InvalidArgument


def fields_to_update(
    paths: Sequence[str], updatable: Sequence[str], given: Mapping[str, object]
) -> list[str]:
    """The fields to change, in mask order without repeats.

    No mask means every updatable field the request sets to a non-default value (`given`
    maps a field to its value or to whether it is set); `*` means every updatable field;
    otherwise exactly the named ones. A name that is not updatable is INVALID_ARGUMENT,
    reason UPDATE_MASK_INVALID, listing what is.
    """
    if not paths:
        return [f for f in updatable if given.get(f)]
    if list(paths) == ["*"]:
        return list(updatable)
    bad = [p for p in paths if p not in updatable]
    if bad:
        allowed = ", ".join(updatable)
        raise InvalidArgument(
            [
                FieldViolation("update_mask", f"`{p[:100]}` cannot be updated; updatable: {allowed}")
                for p in bad[:10]
            ],
            reason="UPDATE_MASK_INVALID",
        )
    return list(dict.fromkeys(paths))
