"""The one way requests are validated: collect every bad field, then raise once.

A request's checks all run and add to one `Violations`; at the end `raise_if_any` (or
leaving the `with` block) raises a single InvalidArgument carrying every FieldViolation,
so a client fixes all of its mistakes in one round trip. Rule functions take the
collector and return the cleaned value:

    with Violations() as bad:
        name = rules.clean_name(request.name, "api_key.name", bad)
        scopes = rules.clean_scopes(request.scopes, "api_key.scopes", bad)
    # here both are valid, or InvalidArgument named every bad field

A rule that cannot return a usable value still returns something of the right type (the
input, or an empty value): the collector raises before anything uses it, so a rule
that takes `bad` is only ever called inside a `with Violations()` block (or one that ends
in `raise_if_any`).

Two kinds of check raise on their own instead: a guard of the single field an RPC is
about (a malformed id, which must fail before anything is read), and a check that carries
an ErrorReason of its own (a weak password is PASSWORD_TOO_WEAK, not INVALID_REQUEST).
"""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType

from nexus_server.common.errors import FieldViolation, InvalidArgument


class Violations:
    """The field violations of one request, in the order the checks found them."""

    __slots__ = ("_found", "reason")

    def __init__(self, *, reason: str | None = None) -> None:
        self._found: list[FieldViolation] = []
        self.reason = reason  # the ErrorReason to raise with (INVALID_REQUEST by default)

    def add(self, field: str, description: str) -> None:
        self._found.append(FieldViolation(field, description))

    def extend(self, violations: Iterable[FieldViolation]) -> None:
        self._found.extend(violations)

    def __bool__(self) -> bool:
        return bool(self._found)

    def __len__(self) -> int:
        return len(self._found)

    @property
    def found(self) -> tuple[FieldViolation, ...]:
        return tuple(self._found)

    def has(self, field: str) -> bool:
        """Whether `field` already has a violation (to skip checks that would repeat it)."""
        return any(v.field == field for v in self._found)

    def raise_if_any(self) -> None:
        if self._found:
            raise InvalidArgument(list(self._found), reason=self.reason)

    def __enter__(self) -> Violations:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if kind is None:  # an exception already on its way wins over what was collected
            self.raise_if_any()
