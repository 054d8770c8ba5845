"""What every group of tenant RPCs shares: the servicer's handles, the caller, Empty."""

from __future__ import annotations

from google.protobuf import empty_pb2

from nexus_server.app.context import AppContext
from nexus_server.auth.principal import Principal
from nexus_server.auth.revocations import Revocations
from nexus_server.common.projects import Project
from nexus_server.db.uow import Database
from nexus_server.interceptors.call import current_call
from nexus_server.tenants import invitations, lifecycle
from nexus_server.tenants.actor import Actor
from nexus_server.tenants.cache import AccessCache
from nexus_server.tenants.domain_proof import TxtLookup
from nexus_server.tenants.people import People

EMPTY = empty_pb2.Empty()


def principal() -> Principal:
    return current_call().require_principal()


def actor() -> Actor:
    caller = principal()
    return Actor(caller.user_id, caller.platform_admin)


class RpcBase:
    """The handles the RPC mixins read; TenantServicer.__init__ sets every one."""

    ctx: AppContext
    db: Database
    revocations: Revocations
    catalog: tuple[Project, ...]
    post: invitations.Post
    facts: AccessCache
    txt: TxtLookup
    revoke_keys: lifecycle.RevokeTenantKeys
    people: People  # identity's directory of accounts
