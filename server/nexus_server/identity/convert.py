"""Domain rows to proto messages (and the client facts the transport carries)."""

from __future__ import annotations

from datetime import datetime

from google.protobuf import timestamp_pb2

from nexus.identity.v1 import identity_service_pb2 as pb
from nexus.identity.v1 import session_pb2, user_pb2
from nexus_server.common.addresses import Network, client_address
from nexus_server.identity.deps import Client
from nexus_server.identity.sessions import TokenPair
from nexus_server.identity.store import SessionRow, UserRow
from nexus_server.interceptors.call import Call

_STATUS = {"active": user_pb2.USER_STATUS_ACTIVE, "disabled": user_pb2.USER_STATUS_DISABLED}
STATUS_NAMES = {user_pb2.USER_STATUS_ACTIVE: "active", user_pb2.USER_STATUS_DISABLED: "disabled"}


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def user(row: UserRow, *, for_admin: bool = False) -> user_pb2.User:
    message = user_pb2.User(
        id=row.id,
        email=row.email,
        email_verified=row.email_verified,
        display_name=row.display_name,
        status=_STATUS.get(row.status, user_pb2.USER_STATUS_UNSPECIFIED),
        totp_enabled=row.totp_secret is not None,
        platform_admin=row.platform_admin,
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
        last_login_time=timestamp(row.last_login_time),
        disable_time=timestamp(row.disable_time),
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
        create_time=timestamp(row.create_time),
        last_seen_time=timestamp(row.last_seen_time),
        expire_time=timestamp(row.expire_time),
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
