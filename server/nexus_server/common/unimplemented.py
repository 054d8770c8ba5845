"""The mark of an RPC that a servicer leaves unbuilt on purpose.

Servicers subclass their generated bases, whose methods mypy treats as abstract: a servicer
missing an RPC (or holding it under a misspelt name) cannot be built without mypy naming it.
An RPC the contract has and the code does not yet says so by name,
`CreateWebhookEndpoint = UNIMPLEMENTED`, and answers UNIMPLEMENTED naming itself
(app/handlers.py), as an RPC without a servicer does.
"""

from __future__ import annotations

from typing import Any


class _Unimplemented:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNIMPLEMENTED"


# Typed Any so that it stands in for any generated method's signature.
UNIMPLEMENTED: Any = _Unimplemented()


def is_unimplemented(behavior: object) -> bool:
    """Whether a servicer's attribute for an RPC is no implementation: the mark, or the
    generated base's own method (which would answer a bare UNIMPLEMENTED with no reason)."""
    return behavior is UNIMPLEMENTED or getattr(behavior, "__module__", "").endswith("_pb2_grpc")
