"""Access tokens: issued as EdDSA JWTs named by `kid`, verified locally on every call.

Verification reads no database: the signature is checked with the cached public key, the
claims with the injectable clock, and revocation through the in-memory revocation set that
every replica keeps fresh (sessions ended by logout, revoke, password change or reset,
reuse of a refresh token, or a disabled user).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

from nexus_server.auth.principal import Principal, PrincipalKind
from nexus_server.auth.revocations import Revocations
from nexus_server.common.errors import Unauthenticated
from nexus_server.identity.keys import KeyRing

SESSION = "session"  # revocation kind: subject is a session id
USER = "user"  # revocation kind: subject is a user id (every token of the user)
MAX_TOKEN_CHARS = 8192
_REQUIRED = ["iss", "aud", "sub", "exp", "iat", "jti", "sid"]
# Tolerated clock difference for `iat` between replicas.
_LEEWAY = timedelta(seconds=30)


@dataclass(frozen=True)
class AccessClaims:
    user_id: str
    session_id: str
    tenant_id: str
    roles: tuple[str, ...]
    projects: Mapping[str, str]
    platform_admin: bool


@dataclass(frozen=True)
class VerifiedToken:
    claims: dict[str, object]
    principal: Principal


def _invalid(why: str) -> Unauthenticated:
    return Unauthenticated(f"the access token is not valid: {why}", reason="CREDENTIALS_INVALID")


class AccessTokens:
    def __init__(
        self,
        keys: KeyRing,
        revocations: Revocations,
        *,
        issuer: str,
        audience: str,
        ttl: timedelta,
    ):
        self.keys = keys
        self.revocations = revocations
        self.issuer = issuer
        self.audience = audience
        self.ttl = ttl

    async def issue(self, claims: AccessClaims, now: datetime) -> str:
        key = self.keys.signing_key()
        iat = int(now.timestamp())
        payload: dict[str, object] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": claims.user_id,
            "iat": iat,
            "exp": iat + int(self.ttl.total_seconds()),
            # 128 random bits; token_urlsafe is ~20× cheaper than drawing 22 base62 characters.
            "jti": secrets.token_urlsafe(16),
            "sid": claims.session_id,
            "tid": claims.tenant_id,
            "roles": list(claims.roles),
            "projects": dict(claims.projects),
        }
        if claims.platform_admin:
            payload["padm"] = True
        return jwt.encode(payload, key.private, algorithm=key.alg, headers={"kid": key.kid})

    async def verify_access_token(self, token: str) -> Principal:
        """The TokenVerifier port of the authentication layer."""
        return (await self.verify(token)).principal

    async def verify(self, token: str) -> VerifiedToken:
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise _invalid("empty or too long")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _invalid("malformed") from None
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _invalid("no key id")
        key = await self.keys.verifying_key(kid)
        if key is None:
            raise _invalid("unknown signing key")
        try:
            # Only this key's own algorithm: `none`, or HS256 keyed with the public key, fail here.
            # Time claims are checked below against the injectable clock.
            claims: dict[str, object] = jwt.decode(
                token,
                key.public,
                algorithms=[key.alg],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": _REQUIRED, "verify_exp": False, "verify_iat": False},
            )
        except jwt.PyJWTError as error:
            raise _invalid(type(error).__name__) from None
        return VerifiedToken(claims, self._principal(claims))

    def _principal(self, claims: dict[str, object]) -> Principal:
        now = self.keys.db.clock.now()
        exp, iat = claims.get("exp"), claims.get("iat")
        if not isinstance(exp, int) or not isinstance(iat, int):
            raise _invalid("bad time claims")
        if exp <= now.timestamp():
            raise Unauthenticated("the access token has expired", reason="CREDENTIALS_INVALID")
        if iat > (now + _LEEWAY).timestamp():
            raise _invalid("issued in the future")
        sub, sid, tid = claims.get("sub"), claims.get("sid"), claims.get("tid", "")
        roles, projects = claims.get("roles", []), claims.get("projects", {})
        if not (isinstance(sub, str) and isinstance(sid, str) and isinstance(tid, str)):
            raise _invalid("bad subject claims")
        if not isinstance(roles, list) or not isinstance(projects, dict):
            raise _invalid("bad role claims")
        if self.revocations.is_revoked(SESSION, sid) or self.revocations.is_revoked(USER, sub):
            raise Unauthenticated("the session of this access token has ended", reason="CREDENTIALS_INVALID")
        return Principal(
            kind=PrincipalKind.USER,
            subject=sub,
            tenant_id=tid,
            roles=frozenset(str(r) for r in roles),
            platform_admin=claims.get("padm") is True,
            session_id=sid,
            token_id=str(claims.get("jti", "")),
            expires_at=datetime.fromtimestamp(exp, UTC),
            projects={str(k): str(v) for k, v in projects.items()},
        )
