"""Builds the billing capability: its servicer, and the ports it provides to others."""

from __future__ import annotations

from nexus_server.app.context import AppContext


def build(ctx: AppContext) -> object | None:
    """The servicer for this capability's gRPC service, or None while none is built
    (every RPC then answers UNIMPLEMENTED naming itself)."""
    return None
