"""IdentityService: proto <-> domain; the rules live in accounts, sessions, factors, admin."""

from __future__ import annotations

from google.protobuf import empty_pb2

from nexus.identity.v1 import identity_service_pb2 as pb
from nexus.identity.v1 import jwk_pb2, user_pb2
from nexus.identity.v1.identity_service_pb2_grpc import IdentityServiceServicer
from nexus_server.common import addresses, timestamps
from nexus_server.identity import accounts, admin, convert, factors, introspection
from nexus_server.identity.deps import Identity
from nexus_server.interceptors.call import ServicerContext, current_call, current_principal


def _me() -> tuple[str, str]:
    principal = current_principal()
    return principal.user_id, principal.session_id


class IdentityServicer(IdentityServiceServicer):
    def __init__(self, deps: Identity):
        self.deps = deps
        self.trusted = addresses.parse_networks(deps.settings.trusted_proxies)

    async def Register(self, request: pb.RegisterRequest, context: ServicerContext) -> pb.RegisterResponse:
        row, pair = await accounts.register(
            self.deps,
            email=request.email,
            password=request.password,
            display_name=request.display_name,
            client=convert.client(current_call(), self.trusted),
        )
        return convert.register_response(row, pair)

    async def Login(self, request: pb.LoginRequest, context: ServicerContext) -> pb.LoginResponse:
        call = current_call()
        row, pair = await accounts.login(
            self.deps,
            email=request.email,
            password=request.password,
            totp_code=request.totp_code,
            tenant_id=request.tenant_id or call.metadata.get("x-tenant-id", "").strip(),
            client=convert.client(call, self.trusted),
        )
        return pb.LoginResponse(user=convert.user(row), **convert.pair_fields(pair))  # type: ignore[arg-type]

    async def RefreshToken(
        self, request: pb.RefreshTokenRequest, context: ServicerContext
    ) -> pb.RefreshTokenResponse:
        pair = await accounts.refresh(
            self.deps, refresh_token=request.refresh_token, tenant_id=request.tenant_id
        )
        return pb.RefreshTokenResponse(**convert.pair_fields(pair))  # type: ignore[arg-type]

    async def Logout(self, request: pb.LogoutRequest, context: ServicerContext) -> pb.LogoutResponse:
        user_id, session_id = _me()
        count = await accounts.logout(
            self.deps, user_id=user_id, session_id=session_id, all_sessions=request.all_sessions
        )
        return pb.LogoutResponse(revoked_session_count=count)

    async def IntrospectToken(
        self, request: pb.IntrospectTokenRequest, context: ServicerContext
    ) -> pb.IntrospectTokenResponse:
        result = await introspection.introspect(
            self.deps,
            request.token,
            request.token_type_hint,
            reader_tenant_id=current_principal().tenant_id,
        )
        return convert.introspection(result, self.deps.tokens.audience)

    async def GetJwks(self, request: pb.GetJwksRequest, context: ServicerContext) -> jwk_pb2.JsonWebKeySet:
        return jwk_pb2.JsonWebKeySet(keys=[jwk_pb2.JsonWebKey(**k) for k in self.deps.keys.jwks()])

    async def GetCurrentUser(
        self, request: pb.GetCurrentUserRequest, context: ServicerContext
    ) -> user_pb2.User:
        return convert.user(await accounts.current_user(self.deps, _me()[0]))

    async def UpdateCurrentUser(
        self, request: pb.UpdateCurrentUserRequest, context: ServicerContext
    ) -> user_pb2.User:
        name = convert.display_name_change(request)
        return convert.user(await accounts.update_profile(self.deps, _me()[0], display_name=name))

    async def ChangePassword(
        self, request: pb.ChangePasswordRequest, context: ServicerContext
    ) -> pb.ChangePasswordResponse:
        user_id, session_id = _me()
        count = await accounts.change_password(
            self.deps,
            user_id=user_id,
            session_id=session_id,
            current_password=request.current_password,
            new_password=request.new_password,
        )
        return pb.ChangePasswordResponse(revoked_session_count=count)

    async def ListSessions(
        self, request: pb.ListSessionsRequest, context: ServicerContext
    ) -> pb.ListSessionsResponse:
        user_id, session_id = _me()
        rows, next_token = await accounts.list_sessions(
            self.deps, user_id=user_id, page_size=request.page_size, page_token=request.page_token
        )
        return convert.sessions_page(rows, next_token, session_id)

    async def RevokeSession(
        self, request: pb.RevokeSessionRequest, context: ServicerContext
    ) -> empty_pb2.Empty:
        await accounts.revoke_session(self.deps, user_id=_me()[0], session_id=request.session_id)
        return empty_pb2.Empty()

    async def RequestPasswordReset(
        self, request: pb.RequestPasswordResetRequest, context: ServicerContext
    ) -> pb.RequestPasswordResetResponse:
        await accounts.request_password_reset(self.deps, email=request.email)
        return pb.RequestPasswordResetResponse()

    async def ResetPassword(
        self, request: pb.ResetPasswordRequest, context: ServicerContext
    ) -> pb.ResetPasswordResponse:
        await accounts.reset_password(self.deps, token=request.token, new_password=request.new_password)
        return pb.ResetPasswordResponse()

    async def VerifyEmail(
        self, request: pb.VerifyEmailRequest, context: ServicerContext
    ) -> pb.VerifyEmailResponse:
        row = await accounts.verify_email(self.deps, token=request.token)
        return pb.VerifyEmailResponse(user_id=row.id, email=row.email)

    async def SendVerificationEmail(
        self, request: pb.SendVerificationEmailRequest, context: ServicerContext
    ) -> pb.SendVerificationEmailResponse:
        await accounts.send_verification_email(self.deps, _me()[0])
        return pb.SendVerificationEmailResponse()

    async def EnrollTotp(
        self, request: pb.EnrollTotpRequest, context: ServicerContext
    ) -> pb.EnrollTotpResponse:
        secret, uri, expire = await factors.enroll(self.deps, user_id=_me()[0], password=request.password)
        return pb.EnrollTotpResponse(secret=secret, otpauth_uri=uri, expire_time=timestamps.timestamp(expire))

    async def ConfirmTotp(
        self, request: pb.ConfirmTotpRequest, context: ServicerContext
    ) -> pb.ConfirmTotpResponse:
        codes, row = await factors.confirm(self.deps, user_id=_me()[0], code=request.code)
        return pb.ConfirmTotpResponse(recovery_codes=codes, user=convert.user(row))

    async def DisableTotp(self, request: pb.DisableTotpRequest, context: ServicerContext) -> user_pb2.User:
        return convert.user(await factors.disable(self.deps, user_id=_me()[0], code=request.code))

    async def ListUsers(self, request: pb.ListUsersRequest, context: ServicerContext) -> pb.ListUsersResponse:
        rows, next_token = await admin.list_users(
            self.deps,
            page_size=request.page_size,
            page_token=request.page_token,
            email=request.email,
            status=convert.status_filter(request.status),
        )
        return convert.users_page(rows, next_token)

    async def GetUser(self, request: pb.GetUserRequest, context: ServicerContext) -> user_pb2.User:
        return convert.user(await admin.get_user(self.deps, request.id), for_admin=True)

    async def DisableUser(self, request: pb.DisableUserRequest, context: ServicerContext) -> user_pb2.User:
        row = await admin.disable_user(
            self.deps, admin_id=_me()[0], user_id=request.id, reason=request.reason
        )
        return convert.user(row, for_admin=True)

    async def EnableUser(self, request: pb.EnableUserRequest, context: ServicerContext) -> user_pb2.User:
        return convert.user(await admin.enable_user(self.deps, user_id=request.id), for_admin=True)
