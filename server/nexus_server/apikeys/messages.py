"""ApiKeyService messages <-> domain values: enums, times, update masks (no rules here
beyond the shape of the messages themselves)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict

from google.protobuf import timestamp_pb2

from nexus.apikey.v1 import api_key_pb2, apikey_service_pb2
from nexus_server.apikeys import answers, rules
from nexus_server.apikeys.store import ApiKeyRow
from nexus_server.apikeys.workflows import UPDATABLE, KeyUpdate, ListQuery
from nexus_server.common import timestamps
from nexus_server.common.errors import FieldViolation, InvalidArgument
from nexus_server.common.fieldmask import fields_to_update
from nexus_server.common.memo import Memo
from nexus_server.common.validation import Violations

ApiKey = api_key_pb2.ApiKey
Reason = apikey_service_pb2.VerifyApiKeyResponse

ENVIRONMENT_NAMES: dict[int, str] = {ApiKey.ENVIRONMENT_TEST: "test", ApiKey.ENVIRONMENT_LIVE: "live"}
_ENVIRONMENT_ENUM = {name: ApiKey.Environment.ValueType(number) for number, name in ENVIRONMENT_NAMES.items()}
STATE_NAMES: dict[int, str] = {
    ApiKey.STATE_ACTIVE: rules.ACTIVE,
    ApiKey.STATE_EXPIRED: rules.EXPIRED,
    ApiKey.STATE_REVOKED: rules.REVOKED,
}
_STATE_ENUM = {name: ApiKey.State.ValueType(number) for number, name in STATE_NAMES.items()}
_REASONS = {
    answers.VALID: Reason.REASON_VALID,
    "malformed": Reason.REASON_MALFORMED,
    "not_found": Reason.REASON_NOT_FOUND,
    rules.REVOKED: Reason.REASON_REVOKED,
    rules.EXPIRED: Reason.REASON_EXPIRED,
    answers.TENANT_SUSPENDED: Reason.REASON_TENANT_SUSPENDED,
    answers.INSUFFICIENT_SCOPE: Reason.REASON_INSUFFICIENT_SCOPE,
    answers.RATE_LIMITED: Reason.REASON_RATE_LIMITED,
}


def environment_of(number: int, field: str, bad: Violations) -> str | None:
    """A list filter's environment; unspecified means any."""
    if number == ApiKey.ENVIRONMENT_UNSPECIFIED:
        return None
    if number not in ENVIRONMENT_NAMES:
        bad.add(field, "must be ENVIRONMENT_TEST or ENVIRONMENT_LIVE")
    return ENVIRONMENT_NAMES.get(number)


def state_of(number: int, field: str, bad: Violations) -> str | None:
    if number == ApiKey.STATE_UNSPECIFIED:
        return None
    if number not in STATE_NAMES:
        bad.add(field, "must be STATE_ACTIVE, STATE_REVOKED or STATE_EXPIRED")
    return STATE_NAMES.get(number)


class NewKey(TypedDict):
    """workflows.issue_key's arguments that a CreateApiKeyRequest gives."""

    name: str
    scopes: list[str]
    environment: str
    rate_limit_per_minute: int
    expire_time: datetime | None


def new_key(request: apikey_service_pb2.CreateApiKeyRequest) -> NewKey:
    if not request.HasField("api_key"):
        raise InvalidArgument(FieldViolation("api_key", "is required"))
    key = request.api_key
    with Violations() as bad:
        expire = _expire_time(key, bad)
    return NewKey(
        name=key.name,
        scopes=list(key.scopes),
        # An unknown or unset environment becomes "", which issue_key refuses along with any
        # other bad field.
        environment=ENVIRONMENT_NAMES.get(key.environment, ""),
        rate_limit_per_minute=key.rate_limit_per_minute,
        expire_time=expire,
    )


def _expire_time(key: ApiKey, bad: Violations) -> datetime | None:
    if not key.HasField("expire_time"):
        return None
    return timestamps.to_datetime(key.expire_time, "api_key.expire_time", bad)


def list_query(request: apikey_service_pb2.ListApiKeysRequest, tenant_id: str) -> ListQuery:
    with Violations() as bad:
        environment = environment_of(request.environment, "environment", bad)
        state = state_of(request.state, "state", bad)
    return ListQuery(
        tenant_id=tenant_id,
        page_size=request.page_size,
        page_token=request.page_token,
        environment=environment,
        state=state,
        show_revoked=request.show_revoked,
    )


def grace_period(request: apikey_service_pb2.RotateApiKeyRequest) -> timedelta:
    with Violations() as bad:
        return timestamps.to_timedelta(request.grace_period, "grace_period", rules.MAX_GRACE, bad)


def keys_page(
    rows: list[ApiKeyRow], next_token: str, now: datetime
) -> apikey_service_pb2.ListApiKeysResponse:
    return apikey_service_pb2.ListApiKeysResponse(
        api_keys=[api_key(r, now) for r in rows], next_page_token=next_token
    )


def created(row: ApiKeyRow, full_key: str, now: datetime) -> apikey_service_pb2.CreateApiKeyResponse:
    return apikey_service_pb2.CreateApiKeyResponse(api_key=api_key(row, now), key=full_key)


def rotated(row: ApiKeyRow, full_key: str, now: datetime) -> apikey_service_pb2.RotateApiKeyResponse:
    return apikey_service_pb2.RotateApiKeyResponse(api_key=api_key(row, now), key=full_key)


def api_key(row: ApiKeyRow, now: datetime) -> api_key_pb2.ApiKey:
    message = ApiKey(
        id=row.id,
        tenant_id=row.tenant_id,
        name=row.name,
        scopes=list(row.scopes),
        environment=_ENVIRONMENT_ENUM[row.environment],
        rate_limit_per_minute=row.rate_limit_per_minute,
        state=_STATE_ENUM[rules.state_of(row, now)],
        start=row.start,
        created_by=row.created_by,
        create_time=timestamps.timestamp(row.create_time),
        update_time=timestamps.timestamp(row.update_time),
    )
    for name in ("expire_time", "last_used_time", "revoke_time", "rotate_time"):
        value = getattr(row, name)
        if value is not None:
            getattr(message, name).CopyFrom(timestamps.timestamp(value))
    if rules.previous_secret_live(row, now) and row.previous_secret_expire_time is not None:
        message.previous_secret_expire_time.CopyFrom(timestamps.timestamp(row.previous_secret_expire_time))
    return message


def key_update(request: apikey_service_pb2.UpdateApiKeyRequest) -> KeyUpdate:
    """The change an UpdateApiKey asks for, from its mask (empty: every non-default field)."""
    if not request.HasField("api_key"):
        raise InvalidArgument(FieldViolation("api_key", "is required"))
    key = request.api_key
    given = {
        "name": bool(key.name),
        "scopes": bool(key.scopes),
        "rate_limit_per_minute": key.rate_limit_per_minute != 0,
        "expire_time": key.HasField("expire_time"),
    }
    chosen = fields_to_update(list(request.update_mask.paths), UPDATABLE, given)
    values: dict[str, Any] = {}
    bad = Violations()
    for name in chosen:
        if name == "name":
            values["name"] = key.name
        elif name == "scopes":
            values["scopes"] = list(key.scopes)
        elif name == "rate_limit_per_minute":
            values["rate_limit_per_minute"] = key.rate_limit_per_minute
        elif name == "expire_time":
            values["expire_time"] = _expire_time(key, bad)
    bad.raise_if_any()
    return KeyUpdate(**values)


class VerifyArgs(TypedDict):
    """answers.verify's arguments that a VerifyApiKeyRequest gives."""

    key: str
    required_scopes: list[str]
    cost: int


def verify_args(request: apikey_service_pb2.VerifyApiKeyRequest) -> VerifyArgs:
    return VerifyArgs(
        key=request.key,
        required_scopes=list(request.required_scopes) if request.required_scopes else [],
        cost=request.rate_limit_cost if request.HasField("rate_limit_cost") else 1,
    )


def verify_response(answer: answers.Answer) -> apikey_service_pb2.VerifyApiKeyResponse:
    row = answer.row
    key_part = _key_fields(row) if row is not None else b""
    response = apikey_service_pb2.VerifyApiKeyResponse.FromString(key_part)
    response.valid = answer.reason == answers.VALID
    response.reason = _REASONS[answer.reason]
    if row is None:
        return response
    if answer.missing_scopes:
        response.missing_scopes.extend(answer.missing_scopes)
    if answer.rate is not None and answer.reason in (answers.VALID, answers.RATE_LIMITED):
        rate = response.rate_limit
        rate.limit = answer.rate.limit
        rate.remaining = answer.rate.remaining
        _set_time(rate.reset_time, answer.rate.reset_time)
        if answer.rate.retry_after is not None:
            rate.retry_after.CopyFrom(timestamps.duration(answer.rate.retry_after))
    if answer.previous_secret:
        response.previous_secret = True
        if answer.previous_secret_expire_time is not None:
            _set_time(response.previous_secret_expire_time, answer.previous_secret_expire_time)
    return response


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A key record's own part of VerifyApiKey's answer (id, tenant, name, scopes, environment,
# expiry), serialized once per record: a service verifies the same few keys again and
# again, and parsing these bytes costs less than setting the fields one by one.
_KEY_FIELDS: Memo[str, tuple[ApiKeyRow, bytes]] = Memo()


def _key_fields(row: ApiKeyRow) -> bytes:
    known = _KEY_FIELDS.get(row.id)
    if known is not None and known[0] is row:
        return known[1]
    response = apikey_service_pb2.VerifyApiKeyResponse(
        key_id=row.id,
        tenant_id=row.tenant_id,
        name=row.name,
        scopes=row.scopes,
        environment=_ENVIRONMENT_ENUM[row.environment],
    )
    if row.expire_time is not None:
        _set_time(response.expire_time, row.expire_time)
    return _KEY_FIELDS.put(row.id, (row, response.SerializeToString()))[1]


def _set_time(target: timestamp_pb2.Timestamp, value: datetime) -> None:
    """Timestamp.FromDatetime in place, by arithmetic (VerifyApiKey sets one on every call,
    and FromDatetime goes through a time tuple)."""
    since = (value if value.tzinfo is not None else value.replace(tzinfo=UTC)) - _EPOCH
    target.seconds = since.days * 86_400 + since.seconds
    target.nanos = since.microseconds * 1000
