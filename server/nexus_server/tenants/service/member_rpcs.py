"""The member RPCs: add (an invitation), list, update, remove, leave; and invitations."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from google.protobuf import empty_pb2

from nexus.tenant.v1 import member_pb2
from nexus.tenant.v1 import tenant_service_pb2 as pb
from nexus_server.common.validation import Violations
from nexus_server.tenants import convert, invitations, members
from nexus_server.tenants.service.base import EMPTY, RpcBase, actor, principal


def _ttl(request: pb.AddMemberRequest) -> timedelta | None:
    if not request.HasField("invitation_ttl"):
        return None
    seconds, nanos = request.invitation_ttl.seconds, request.invitation_ttl.nanos
    with Violations() as bad:
        if not 0 <= seconds <= 400 * 86400 or not 0 <= nanos < 10**9:
            bad.add("invitation_ttl", "must be from 1 hour to 30 days")
    return timedelta(seconds=seconds, microseconds=nanos // 1000)


class MemberRpcs(RpcBase):
    async def AddMember(self, request: pb.AddMemberRequest, context: Any) -> pb.AddMemberResponse:
        add = members.AddRequest(
            tenant_id=request.tenant_id,
            email=request.email,
            user_id=request.user_id,
            roles=tuple(request.roles),
            invitation_ttl=_ttl(request),
            post=self.post,
        )
        async with self.db.unit_of_work() as uow:
            invitation = await members.add_member(uow, self.people, actor(), add)
            return pb.AddMemberResponse(invitation=convert.invitation(invitation, uow))

    async def ListMembers(self, request: pb.ListMembersRequest, context: Any) -> pb.ListMembersResponse:
        query = members.MemberQuery(
            tenant_id=request.tenant_id,
            page_size=request.page_size,
            page_token=request.page_token,
            role=request.role,
            group_id=request.group_id,
            query=request.query,
        )
        async with self.db.unit_of_work(readonly=True) as uow:
            views, token = await members.list_members(uow, self.people, query)
        return pb.ListMembersResponse(members=[convert.member(v) for v in views], next_page_token=token)

    async def UpdateMember(self, request: pb.UpdateMemberRequest, context: Any) -> member_pb2.Member:
        async with self.db.unit_of_work() as uow:
            view = await members.update_member(
                uow,
                self.people,
                self.revocations,
                actor(),
                request.tenant_id,
                request.member.user_id,
                list(request.member.roles),
                list(request.update_mask.paths),
            )
        return convert.member(view)

    async def RemoveMember(self, request: pb.RemoveMemberRequest, context: Any) -> empty_pb2.Empty:
        async with self.db.unit_of_work() as uow:
            await members.remove_member(uow, self.revocations, actor(), request.tenant_id, request.user_id)
        return EMPTY

    async def LeaveTenant(self, request: pb.LeaveTenantRequest, context: Any) -> empty_pb2.Empty:
        me = actor()
        async with self.db.unit_of_work() as uow:
            await members.remove_member(
                uow, self.revocations, me, request.tenant_id, me.user_id, leaving=True
            )
        return EMPTY

    async def ListInvitations(
        self, request: pb.ListInvitationsRequest, context: Any
    ) -> pb.ListInvitationsResponse:
        with Violations() as bad:
            if request.state not in (0, *convert.INVITATION_STATE_NAME):
                bad.add("state", "is not an invitation state")
        async with self.db.unit_of_work(readonly=True) as uow:
            rows, token = await invitations.list_invitations(
                uow,
                request.tenant_id,
                request.page_size,
                request.page_token,
                convert.INVITATION_STATE_NAME.get(request.state, ""),
            )
            return pb.ListInvitationsResponse(
                invitations=[convert.invitation(r, uow) for r in rows], next_page_token=token
            )

    async def RevokeInvitation(
        self, request: pb.RevokeInvitationRequest, context: Any
    ) -> member_pb2.Invitation:
        async with self.db.unit_of_work() as uow:
            row = await invitations.revoke(uow, request.tenant_id, request.invitation_id)
            return convert.invitation(row, uow)

    async def AcceptInvitation(self, request: pb.AcceptInvitationRequest, context: Any) -> member_pb2.Member:
        async with self.db.unit_of_work() as uow:
            row = await invitations.accept(
                uow, self.revocations, self.people, request.token, principal().user_id
            )
            view = await members.view(uow, self.people, row)
        return convert.member(view)
