"""Outbound webhook signatures verify with the third-party `standardwebhooks` package, also
during a secret rotation; a tampered body or a stale timestamp does not."""

from __future__ import annotations

import base64
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from nexus_server.events.webhooks import signing

BODY = b'{"id":"evt_1","type":"deal.won","data":{"amount":5}}'


def test_a_signature_verifies_with_the_standard_webhooks_package() -> None:
    secret = signing.new_secret()
    headers = signing.sign("evt_1", int(time.time()), BODY, [secret])
    assert Webhook(secret).verify(BODY, headers) == {"id": "evt_1", "type": "deal.won", "data": {"amount": 5}}


def test_during_a_rotation_each_secret_alone_verifies() -> None:
    new, old = signing.new_secret(), signing.new_secret(48)
    headers = signing.sign("evt_2", int(time.time()), BODY, [new, old])
    assert len(headers["webhook-signature"].split()) == 2
    for secret in (new, old):
        Webhook(secret).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(signing.new_secret()).verify(BODY, headers)


def test_a_tampered_body_fails_verification() -> None:
    secret = signing.new_secret()
    headers = signing.sign("evt_3", int(time.time()), BODY, [secret])
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY.replace(b"5", b"6"), headers)


@pytest.mark.parametrize("length", [24, 32, 64])
def test_secrets_are_whsec_and_base64_of_24_to_64_random_bytes(length: int) -> None:
    secret = signing.new_secret(length)
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == length
    assert signing.new_secret(length) != secret


@pytest.mark.parametrize("length", [0, 23, 65])
def test_secret_lengths_outside_the_spec_are_refused(length: int) -> None:
    with pytest.raises(ValueError):
        signing.new_secret(length)


def test_our_verify_accepts_ours_and_refuses_stale_or_tampered() -> None:
    secret = signing.new_secret()
    now = int(time.time())
    headers = signing.sign("evt_4", now, BODY, [secret])
    assert signing.verify(headers, BODY, [secret], now=now + 10) == "evt_4"
    with pytest.raises(signing.SignatureInvalid):
        signing.verify(headers, BODY, [secret], now=now + 301)
    with pytest.raises(signing.SignatureInvalid):
        signing.verify(headers, BODY + b" ", [secret], now=now)
    with pytest.raises(signing.SignatureInvalid):
        signing.verify({**headers, "webhook-timestamp": "soon"}, BODY, [secret], now=now)


def test_odd_signature_headers_are_refused_not_crashed_on() -> None:
    secret = signing.new_secret()
    now = int(time.time())
    headers = signing.sign("evt_5", now, BODY, [secret])
    for changed in ({"webhook-signature": "v1,\u00e9"}, {"webhook-timestamp": " +1"}):
        with pytest.raises(signing.SignatureInvalid):
            signing.verify({**headers, **changed}, BODY, [secret], now=now)
    with pytest.raises(ValueError):
        signing.verify(headers, BODY, [], now=now)
    with pytest.raises(ValueError):
        signing.sign("evt\r\nx: y", now, BODY, [secret])
