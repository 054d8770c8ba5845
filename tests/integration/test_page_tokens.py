"""Every List RPC refuses a page token it did not mint (issue 12, finding 7).

Before page tokens were authenticated, a forged one reached the database: an extreme time
overflowed in UtcDateTime (INTERNAL) and a NUL in an id was a PostgreSQL DataError. Now any
token this server did not mint for this RPC and query is INVALID_ARGUMENT PAGE_TOKEN_INVALID
on the page_token field, before any query runs.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest

from nexus.apikey.v1 import apikey_service_pb2 as keys_pb
from nexus.apikey.v1 import apikey_service_pb2_grpc as keys_rpc
from nexus.events.v1 import events_service_pb2 as events_pb
from nexus.events.v1 import events_service_pb2_grpc as events_rpc
from nexus.identity.v1 import identity_service_pb2 as identity_pb
from nexus.identity.v1 import identity_service_pb2_grpc as identity_rpc
from nexus.tenant.v1 import tenant_service_pb2 as pb
from nexus_server.app.server import NexusServer
from tests.integration.tenants_support import team, tenants
from tests.support import field_violations, issue_key, key_metadata, platform_admin, reason


def _b64(body: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")


# What the old, unauthenticated schemes accepted, and what the review used to reach the
# database: every shape of position, with a year-10000 time and a NUL in the id.
_FORGED = {
    "tenants-style overflow": _b64({"f": "0" * 16, "k": ["9999-12-31T23:59:59-23:59", "usr_x"]}),
    "apikeys-style NUL": _b64({"t": "2026-01-01T00:00:00+00:00", "i": "key_\u0000x", "f": "0" * 16}),
    "events-style": _b64({"q": "0" * 16, "s": 2**62}),
    "identity-style NUL": _b64({"a": "ses_\u0000", "f": "0" * 16}),
    "garbage": "%%%not-base64%%%",
    "long": "A" * 5000,
}

Call = Callable[[str], Awaitable[Any]]


def _digest(value: object, **dumps: Any) -> str:
    return hashlib.sha256(json.dumps(value, **dumps).encode()).hexdigest()[:16]


def _minted_the_old_way(tenant_id: str) -> dict[str, dict[str, str]]:
    """Tokens as the old schemes built them: the query fingerprint was a plain hash anyone
    could compute, so these passed every check and their hostile values reached the database."""
    members = [tenant_id, "", "", ""]
    return {
        "ListMembers": {
            "year 10000": _b64(
                {
                    "f": _digest(members, sort_keys=True, default=str),
                    "k": ["9999-12-31T23:59:59-23:59", "usr_x"],
                }
            ),
        },
        "ListSessions": {"NUL in id": _b64({"a": "ses_\u0000x", "f": _digest({}, sort_keys=True)})},
    }


async def _calls(server: NexusServer, channel: grpc.aio.Channel) -> dict[str, Call]:
    t = await team(server, channel)
    admin = await platform_admin(server, channel)
    key = key_metadata(await issue_key(server, t.tenant_id, ["apikeys:read", "events:subscribe"]))
    ten, ident = tenants(channel), identity_rpc.IdentityServiceStub(channel)
    apikeys, events = keys_rpc.ApiKeyServiceStub(channel), events_rpc.EventsServiceStub(channel)
    owner, tid = t.owner.metadata(), t.tenant_id
    return {
        "ListTenants": lambda tok: ten.ListTenants(pb.ListTenantsRequest(page_token=tok), metadata=owner),
        "ListMembers": lambda tok: ten.ListMembers(
            pb.ListMembersRequest(tenant_id=tid, page_token=tok), metadata=owner
        ),
        "ListInvitations": lambda tok: ten.ListInvitations(
            pb.ListInvitationsRequest(tenant_id=tid, page_token=tok), metadata=owner
        ),
        "ListRoles": lambda tok: ten.ListRoles(
            pb.ListRolesRequest(tenant_id=tid, page_token=tok), metadata=owner
        ),
        "ListPermissions": lambda tok: ten.ListPermissions(
            pb.ListPermissionsRequest(page_token=tok), metadata=(*owner, ("x-tenant-id", tid))
        ),
        "ListGroups": lambda tok: ten.ListGroups(
            pb.ListGroupsRequest(tenant_id=tid, page_token=tok), metadata=owner
        ),
        "ListProjects": lambda tok: ten.ListProjects(pb.ListProjectsRequest(page_token=tok), metadata=owner),
        "ListProjectAccess": lambda tok: ten.ListProjectAccess(
            pb.ListProjectAccessRequest(tenant_id=tid, page_token=tok), metadata=owner
        ),
        "ListSessions": lambda tok: ident.ListSessions(
            identity_pb.ListSessionsRequest(page_token=tok), metadata=owner
        ),
        "ListUsers": lambda tok: ident.ListUsers(
            identity_pb.ListUsersRequest(page_token=tok), metadata=admin.metadata()
        ),
        "ListApiKeys": lambda tok: apikeys.ListApiKeys(
            keys_pb.ListApiKeysRequest(page_token=tok), metadata=key
        ),
        "ListEvents": lambda tok: events.ListEvents(
            events_pb.ListEventsRequest(page_token=tok), metadata=key
        ),
    }


async def _refused(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str, list[str]]:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return raised.value.code(), reason(raised.value), field_violations(raised.value)


async def test_every_list_rpc_refuses_forged_tokens_before_any_query(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel
) -> None:
    calls = await _calls(server[0], channel)
    for rpc_name, call in calls.items():
        try:
            await call("")  # the first page works for this caller
        except grpc.aio.AioRpcError as error:
            raise AssertionError(rpc_name) from error
        for label, token in _FORGED.items():
            answer = await _refused(call(token))
            assert answer == (grpc.StatusCode.INVALID_ARGUMENT, "PAGE_TOKEN_INVALID", ["page_token"]), (
                rpc_name,
                label,
            )


async def test_tokens_built_with_the_public_fingerprint_no_longer_reach_the_database(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel
) -> None:
    t = await team(server[0], channel)
    stub, ident = tenants(channel), identity_rpc.IdentityServiceStub(channel)
    owner = t.owner.metadata()
    calls: dict[str, Call] = {
        "ListMembers": lambda tok: stub.ListMembers(
            pb.ListMembersRequest(tenant_id=t.tenant_id, page_token=tok), metadata=owner
        ),
        "ListSessions": lambda tok: ident.ListSessions(
            identity_pb.ListSessionsRequest(page_token=tok), metadata=owner
        ),
    }
    for rpc_name, tokens in _minted_the_old_way(t.tenant_id).items():
        for label, token in tokens.items():
            answer = await _refused(calls[rpc_name](token))
            assert answer == (grpc.StatusCode.INVALID_ARGUMENT, "PAGE_TOKEN_INVALID", ["page_token"]), (
                rpc_name,
                label,
            )


async def test_a_token_works_only_for_the_rpc_and_query_that_minted_it(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel
) -> None:
    t = await team(server[0], channel)
    stub = tenants(channel)
    owner = t.owner.metadata()
    page = await stub.ListMembers(pb.ListMembersRequest(tenant_id=t.tenant_id, page_size=1), metadata=owner)
    assert page.next_page_token  # two members: owner and member
    rest = await stub.ListMembers(
        pb.ListMembersRequest(tenant_id=t.tenant_id, page_size=1, page_token=page.next_page_token),
        metadata=owner,
    )
    assert len(rest.members) == 1 and rest.members[0].user_id != page.members[0].user_id
    # One altered character anywhere, the same token for another RPC with the same filter
    # shape, and the same token for another filter: all refused.
    token = page.next_page_token
    flipped = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]
    other_rpc = stub.ListGroups(pb.ListGroupsRequest(tenant_id=t.tenant_id, page_token=token), metadata=owner)
    other_query = stub.ListMembers(
        pb.ListMembersRequest(tenant_id=t.tenant_id, role="admin", page_token=token), metadata=owner
    )
    for call in (
        stub.ListMembers(pb.ListMembersRequest(tenant_id=t.tenant_id, page_token=flipped), metadata=owner),
        other_rpc,
        other_query,
    ):
        assert (await _refused(call))[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "PAGE_TOKEN_INVALID")
