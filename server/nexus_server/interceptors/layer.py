"""The shape of one concern in the chain."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol

from nexus_server.interceptors.call import Call


class Layer(Protocol):
    """One concern of the chain. `before` runs in chain order and may raise a domain error
    to refuse the call; `after` runs in reverse order once the outcome is known, always.
    `before` is a coroutine function, or a plain function when it never waits (the chain
    then calls it without making a coroutine)."""

    def before(self, call: Call) -> Awaitable[None] | None: ...

    def after(self, call: Call) -> None: ...


def nothing_after(call: Call) -> None:
    """The `after` of a layer with nothing to do once the outcome is known
    (`after = staticmethod(nothing_after)`): the chain leaves it out of every call."""
