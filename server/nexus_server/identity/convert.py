"""IdentityService messages <-> domain values: rows to messages, request fields to the
values the workflows take (and the client facts the transport carries)."""

from __future__ import annotations

from nexus.identity.v1 import identity_service_pb2 as pb
from nexus.identity.v1 import session_pb2, user_pb2
from nexus_server.common.addresses import Network, client_address
from nexus_server.common.errors import FieldViolation, InvalidArgument
from nexus_server.common.timestamps import optional_timestamp
from nexus_server.identity.deps import Client
from nexus_server.identity.introspection import Introspection
from nexus_server.identity.sessions import TokenPair
from nexus_server.identity.store import SessionRow, UserRow
from nexus_server.interceptors.call import Call

_STATUS = {"active": user_pb2.USER_STATUS_ACTIVE, "disabled": user_pb2.USER_STATUS_DISABLED}
STATUS_NAMES = {user_pb2.USER_STATUS_ACTIVE: "active", user_pb2.USER_STATUS_DISABLED: "disabled"}
_UPDATABLE = {"display_name"}


def user(row: UserRow, *, for_admin: bool = False) -> user_pb2.User:
    message = user_pb2.User(
        id=row.id,
        email=row.email,
        email_verified=row.email_verified,
        display_name=row.display_name,
        status=_STATUS.get(row.status, user_pb2.USER_STATUS_UNSPECIFIED),
        totp_enabled=row.totp_secret is not None,
        platform_admin=row.platform_admin,
        create_time=optional_timestamp(row.create_time),
        update_time=optional_timestamp(row.update_time),
        last_login_time=optional_timestamp(row.last_login_time),
        disable_time=optional_timestamp(row.disable_time),
        disable_reason=row.disable_reason if for_admin else "",
    )
    return message


def session(row: SessionRow, current_id: str) -> session_pb2.Session:
    return session_pb2.Session(
        id=row.id,
        user_id=row.user_id,
        tenant_id=row.tenant_id,
        user_agent=row.user_agent,
        ip_address=row.ip_address,
        create_time=optional_timestamp(row.create_time),
        last_seen_time=optional_timestamp(row.last_seen_time),
        expire_time=optional_timestamp(row.expire_time),
        current=row.id == current_id,
    )


def pair_fields(pair: TokenPair) -> dict[str, object]:
    return {
        "access_token": pair.access_token,
        "refresh_token": pair.refresh_token,
        "token_type": "Bearer",
        "expires_in": pair.expires_in,
        "refresh_expires_in": pair.refresh_expires_in,
        "session_id": pair.session_id,
        "tenant_id": pair.tenant_id,
    }


def client(call: Call, trusted: tuple[Network, ...]) -> Client:
    """The caller's user agent and address (`x-forwarded-for` only from a trusted proxy)."""
    forwarded = call.metadata.get("x-forwarded-for", "")
    address = client_address(call.peer, forwarded, trusted)
    return Client(call.metadata.get("user-agent", "")[:512], address[:64])


def register_response(row: UserRow, pair: TokenPair) -> pb.RegisterResponse:
    return pb.RegisterResponse(user=user(row), **pair_fields(pair))  # type: ignore[arg-type]


def users_page(rows: list[UserRow], next_token: str) -> pb.ListUsersResponse:
    return pb.ListUsersResponse(users=[user(r, for_admin=True) for r in rows], next_page_token=next_token)


def sessions_page(rows: list[SessionRow], next_token: str, current_id: str) -> pb.ListSessionsResponse:
    return pb.ListSessionsResponse(
        sessions=[session(r, current_id) for r in rows], next_page_token=next_token
    )


def status_filter(number: user_pb2.UserStatus.ValueType) -> str:
    """ListUsers' `status` as the store names it; "" for any."""
    if number not in (0, *STATUS_NAMES):
        raise InvalidArgument(FieldViolation("status", "is not a known user status"))
    return STATUS_NAMES.get(number, "")


def display_name_change(request: pb.UpdateCurrentUserRequest) -> str | None:
    """The display name an UpdateCurrentUser sets (None: unchanged). With no mask, an empty
    name means "leave it"; with `display_name` in the mask, it clears the name."""
    paths = set(request.update_mask.paths)
    unknown = sorted(p for p in paths if p not in _UPDATABLE)
    if unknown:
        raise InvalidArgument(
            FieldViolation("update_mask", f"only display_name may be updated, not {', '.join(unknown)}"),
            reason="UPDATE_MASK_INVALID",
        )
    if paths:
        return request.user.display_name
    return request.user.display_name or None


def introspection(result: Introspection, audience: str) -> pb.IntrospectTokenResponse:
    """RFC 7662's answer: inactive, bare (a key of another tenant: whether the token is
    live, no more), or described."""
    if not result.active:
        return pb.IntrospectTokenResponse(active=False)
    c = result.claims
    if not result.described:
        return pb.IntrospectTokenResponse(
            active=True,
            token_type="Bearer",
            exp=int(c["exp"]),  # type: ignore[call-overload]
            iat=int(c["iat"]),  # type: ignore[call-overload]
            aud=audience,
            iss=str(c["iss"]),
        )
    return pb.IntrospectTokenResponse(
        active=True,
        username=result.username,
        token_type="Bearer",
        exp=int(c["exp"]),  # type: ignore[call-overload]
        iat=int(c["iat"]),  # type: ignore[call-overload]
        sub=str(c["sub"]),
        aud=audience,
        iss=str(c["iss"]),
        jti=str(c["jti"]),
        sid=str(c["sid"]),
        tenant_id=str(c.get("tid", "")),
        roles=[str(r) for r in c.get("roles", [])],  # type: ignore[attr-defined]
        projects={str(k): str(v) for k, v in dict(c.get("projects", {})).items()},  # type: ignore[call-overload]
    )
