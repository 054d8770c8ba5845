"""A servicer that needs a caller gets a Principal, or the call is refused, never `None`."""

from __future__ import annotations

import contextvars
from typing import Any

import pytest

from nexus_server.auth.principal import Principal, PrincipalKind
from nexus_server.common.errors import Unauthenticated
from nexus_server.interceptors.call import Call, MethodInfo, current_principal, set_current_call


def _call() -> Call:
    method = MethodInfo.parse("/nexus.apikey.v1.ApiKeyService/ListApiKeys", streaming=False)
    context: Any = None
    return Call(method, context, {})


def _as_current(call: Call) -> Principal:
    """current_principal() while `call` is being served (in a context of its own, as each
    RPC's task has)."""

    def serve() -> Principal:
        set_current_call(call)
        return current_principal()

    return contextvars.copy_context().run(serve)


def test_the_authenticated_caller_is_returned() -> None:
    call = _call()
    call.principal = Principal(PrincipalKind.USER, "usr_1", tenant_id="ten_1")
    assert call.require_principal() is call.principal
    assert _as_current(call) is call.principal


def test_a_call_without_a_caller_is_refused_as_unauthenticated() -> None:
    call = _call()
    with pytest.raises(Unauthenticated) as raised:
        call.require_principal()
    assert raised.value.reason == "CREDENTIALS_MISSING"
    with pytest.raises(Unauthenticated):
        _as_current(call)
