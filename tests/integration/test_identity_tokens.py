"""Access tokens: verified by anyone from the JWKS alone; forged or stale ones refused."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf import json_format

from nexus.identity.v1 import identity_service_pb2 as pb
from nexus.identity.v1 import identity_service_pb2_grpc as rpc
from nexus_server.app.server import NexusServer
from tests.support import issue_key, key_metadata, make_tenant, register_user


def stub(channel: grpc.aio.Channel) -> rpc.IdentityServiceStub:
    return rpc.IdentityServiceStub(channel)


async def jwks(channel: grpc.aio.Channel) -> dict[str, Any]:
    keys = await stub(channel).GetJwks(pb.GetJwksRequest())
    return json_format.MessageToDict(keys, preserving_proto_field_name=True)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def accepted(channel: grpc.aio.Channel, token: str) -> bool:
    try:
        await stub(channel).GetCurrentUser(
            pb.GetCurrentUserRequest(), metadata=(("authorization", f"Bearer {token}"),)
        )
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        return False
    return True


async def test_a_token_verifies_with_pyjwt_and_the_jwks_alone(
    channel: grpc.aio.Channel, server: tuple[NexusServer, int]
) -> None:
    user = await register_user(channel)
    key_set = jwt.PyJWKSet.from_dict(await jwks(channel))
    kid = jwt.get_unverified_header(user.access_token)["kid"]
    key = next(k for k in key_set.keys if k.key_id == kid)
    settings = server[0].settings
    claims = jwt.decode(
        user.access_token,
        key,
        algorithms=["EdDSA", "ES256"],
        audience=settings.audience,
        issuer=settings.issuer,
    )
    assert claims["sub"] == user.user_id and claims["sid"] == user.session_id
    assert {"iss", "aud", "sub", "exp", "iat", "jti", "sid", "tid", "roles", "projects"} <= set(claims)


async def test_jwks_never_carries_private_material(channel: grpc.aio.Channel) -> None:
    for key in (await jwks(channel))["keys"]:
        assert set(key) <= {"kty", "crv", "x", "y", "kid", "use", "alg"}


def _parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header = jwt.get_unverified_header(token)
    payload = jwt.decode(token, options={"verify_signature": False})
    return header, payload


def _unsigned(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    return ".".join([_b64(json.dumps(header).encode()), _b64(json.dumps(payload).encode()), _b64(signature)])


async def test_alg_none_is_refused(channel: grpc.aio.Channel) -> None:
    user = await register_user(channel)
    header, payload = _parts(user.access_token)
    assert not await accepted(channel, _unsigned({**header, "alg": "none"}, payload))


async def test_hs256_signed_with_the_public_key_is_refused(channel: grpc.aio.Channel) -> None:
    user = await register_user(channel)
    header, payload = _parts(user.access_token)
    public = next(k for k in (await jwks(channel))["keys"] if k["kid"] == header["kid"])
    import hashlib
    import hmac

    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": header["kid"]}).encode())
    body = _b64(json.dumps(payload).encode())
    for secret in (json.dumps(public).encode(), base64.urlsafe_b64decode(public["x"] + "==")):
        mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
        assert not await accepted(channel, f"{head}.{body}.{_b64(mac)}")


async def test_tampered_payload_is_refused(channel: grpc.aio.Channel) -> None:
    user = await register_user(channel)
    head, _, signature = user.access_token.split(".")
    _, payload = _parts(user.access_token)
    payload["padm"] = True
    assert not await accepted(channel, f"{head}.{_b64(json.dumps(payload).encode())}.{signature}")


async def test_a_token_signed_by_an_unknown_key_is_refused(channel: grpc.aio.Channel) -> None:
    user = await register_user(channel)
    header, payload = _parts(user.access_token)
    forged = jwt.encode(payload, Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": "not-ours"})
    assert not await accepted(channel, forged)
    # Our kid, someone else's key: the signature check fails.
    assert not await accepted(
        channel,
        jwt.encode(payload, Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": header["kid"]}),
    )


async def test_expired_and_wrong_audience_or_issuer_are_refused(
    channel: grpc.aio.Channel, server: tuple[NexusServer, int]
) -> None:
    user = await register_user(channel)
    deps = server[0].capabilities.identity
    key = deps.keys.signing_key()
    _, payload = _parts(user.access_token)

    def signed(**changes: Any) -> str:
        return jwt.encode({**payload, **changes}, key.private, algorithm="EdDSA", headers={"kid": key.kid})

    assert await accepted(channel, signed())  # the re-signed original is fine: the checks below matter
    now = int(time.time())
    assert not await accepted(channel, signed(exp=now - 1, iat=now - 901))
    assert not await accepted(channel, signed(aud="another-audience"))
    assert not await accepted(channel, signed(iss="https://evil.example"))
    assert not await accepted(channel, "not-a-jwt")


async def test_introspection_reports_an_active_token_and_then_its_revocation(
    channel: grpc.aio.Channel, server: tuple[NexusServer, int]
) -> None:
    user = await register_user(channel)
    tenant = await make_tenant(server[0], user.user_id)
    key = await issue_key(server[0], tenant, ["auth:introspect"])
    login = await stub(channel).Login(pb.LoginRequest(email=user.email, password=user.password))
    active = await stub(channel).IntrospectToken(
        pb.IntrospectTokenRequest(token=login.access_token), metadata=key_metadata(key)
    )
    assert (active.active, active.sub, active.tenant_id, list(active.roles)) == (
        True,
        user.user_id,
        tenant,
        ["owner"],
    )
    assert active.username == user.email and active.sid == login.session_id
    await stub(channel).Logout(
        pb.LogoutRequest(), metadata=(("authorization", f"Bearer {login.access_token}"),)
    )
    ended = await stub(channel).IntrospectToken(
        pb.IntrospectTokenRequest(token=login.access_token), metadata=key_metadata(key)
    )
    assert ended == pb.IntrospectTokenResponse(active=False)


async def test_introspection_by_another_tenants_key_says_only_that_the_token_is_live(
    channel: grpc.aio.Channel, server: tuple[NexusServer, int]
) -> None:
    user = await register_user(channel)
    tenant = await make_tenant(server[0], user.user_id)
    outsider = await register_user(channel)
    other_tenant = await make_tenant(server[0], outsider.user_id)
    other_key = await issue_key(server[0], other_tenant, ["auth:introspect"])
    in_tenant = await stub(channel).Login(pb.LoginRequest(email=user.email, password=user.password))
    assert in_tenant.tenant_id == tenant
    for token in (in_tenant.access_token, user.access_token):  # another tenant's, and no tenant's
        answer = await stub(channel).IntrospectToken(
            pb.IntrospectTokenRequest(token=token), metadata=key_metadata(other_key)
        )
        assert answer.active and answer.token_type == "Bearer" and answer.exp > answer.iat > 0
        assert answer.iss and answer.aud
        # Nothing that says whose token it is: no email, id, session, tenant, roles or projects.
        assert (answer.username, answer.sub, answer.sid, answer.jti, answer.tenant_id) == ("",) * 5
        assert (list(answer.roles), dict(answer.projects)) == ([], {})


async def test_introspection_of_garbage_is_inactive_not_an_error(
    channel: grpc.aio.Channel, server: tuple[NexusServer, int]
) -> None:
    user = await register_user(channel)
    tenant = await make_tenant(server[0], user.user_id)
    key = await issue_key(server[0], tenant, ["auth:introspect"])
    answer = await stub(channel).IntrospectToken(
        pb.IntrospectTokenRequest(token="garbage.token.here"), metadata=key_metadata(key)
    )
    assert not answer.active


async def test_introspection_needs_the_scope(
    channel: grpc.aio.Channel, server: tuple[NexusServer, int]
) -> None:
    user = await register_user(channel)
    tenant = await make_tenant(server[0], user.user_id)
    key = await issue_key(server[0], tenant, ["tenants:read"])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub(channel).IntrospectToken(pb.IntrospectTokenRequest(token="x"), metadata=key_metadata(key))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
