"""Standard Webhooks signing, checked against the reference `standardwebhooks` library."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

import httpx
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.datastructures import Headers

import baton
from baton.signing import (
    DEFAULT_TOLERANCE,
    SECRET_PREFIX,
    InvalidSecret,
    InvalidSignature,
    MalformedHeaders,
    MissingHeaders,
    NoMatchingSignature,
    Signer,
    TimestampOutOfTolerance,
    decode_secret,
    generate_secret,
    sign,
    verify,
)

SECRET_A = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SECRET_B = generate_secret()
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
BODIES = [
    pytest.param(b"", id="empty"),
    pytest.param(b'{"workflowId":"order-123","attempt":1}', id="json"),
    pytest.param('{"name":"Zoë","price":"€12","emoji":"📦"}'.encode(), id="utf8"),
    pytest.param(b"x" * 100_000, id="large"),
]


def signed_headers(
    secrets: str | list[str], body: bytes, *, msg_id: str = MSG_ID, timestamp: int | None = None
) -> dict[str, str]:
    return Signer(secrets).headers(
        msg_id, int(time.time()) if timestamp is None else timestamp, body
    )


def test_known_vector_from_the_standard_webhooks_spec() -> None:
    signature = sign([SECRET_A], MSG_ID, 1614265330, b'{"test": 2432232314}')
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


@pytest.mark.parametrize("body", BODIES)
def test_round_trip(body: bytes) -> None:
    headers = signed_headers(SECRET_A, body)
    verify(body, headers, SECRET_A)
    Signer([SECRET_A]).verify(body, headers)


@pytest.mark.parametrize("body", BODIES)
@pytest.mark.parametrize("secrets", [[SECRET_A], [SECRET_A, SECRET_B]], ids=["one", "two"])
def test_reference_library_verifies_our_signature(secrets: list[str], body: bytes) -> None:
    headers = signed_headers(secrets, body)
    for secret in secrets:
        Webhook(secret).verify(body, headers, json_parse=False)


@pytest.mark.parametrize("body", BODIES)
def test_we_verify_the_reference_library_signature(body: bytes) -> None:
    now = datetime.now(tz=UTC)
    signature = Webhook(SECRET_B).sign(MSG_ID, now, body.decode())
    headers = {
        "webhook-id": MSG_ID,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }
    verify(body, headers, SECRET_B)


def test_reference_library_rejects_a_signature_with_another_secret() -> None:
    headers = signed_headers(SECRET_A, b"{}")
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET_B).verify(b"{}", headers)


def test_sign_has_one_entry_per_secret_in_order() -> None:
    entries = sign([SECRET_A, SECRET_B], MSG_ID, 1, b"{}").split(" ")
    assert entries == [sign(SECRET_A, MSG_ID, 1, b"{}"), sign(SECRET_B, MSG_ID, 1, b"{}")]
    assert all(entry.startswith("v1,") for entry in entries)


def test_signer_headers() -> None:
    headers = Signer(SECRET_A).headers(MSG_ID, 1614265330, b'{"test": 2432232314}')
    assert headers == {
        "webhook-id": MSG_ID,
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }


def test_a_lone_string_is_one_secret_not_a_sequence_of_characters() -> None:
    assert sign(SECRET_A, MSG_ID, 1, b"") == sign([SECRET_A], MSG_ID, 1, b"")
    assert repr(Signer(SECRET_A)) == "<Signer with 1 secret>"


# --- rotation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "receiver", [SECRET_A, SECRET_B, [SECRET_A], [generate_secret(), SECRET_B]]
)
def test_rotation_either_secret_alone_verifies(receiver: str | list[str]) -> None:
    headers = signed_headers([SECRET_A, SECRET_B], b"{}")
    verify(b"{}", headers, receiver)


def test_rotation_a_secret_that_did_not_sign_does_not_verify() -> None:
    headers = signed_headers([SECRET_A], b"{}")
    with pytest.raises(NoMatchingSignature):
        verify(b"{}", headers, [SECRET_B])


# --- tampering --------------------------------------------------------------------------


def _tamper_body(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    return body + b" ", headers


def _tamper_id(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    return body, {**headers, "webhook-id": headers["webhook-id"] + "x"}


def _tamper_timestamp(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    return body, {**headers, "webhook-timestamp": str(int(headers["webhook-timestamp"]) - 1)}


def _tamper_signature(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    raw = bytearray(base64.b64decode(headers["webhook-signature"].removeprefix("v1,")))
    raw[0] ^= 1
    return body, {**headers, "webhook-signature": "v1," + base64.b64encode(raw).decode()}


def _other_version(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    return body, {
        **headers,
        "webhook-signature": headers["webhook-signature"].replace("v1,", "v2,"),
    }


def _truncated_signature(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    return body, {**headers, "webhook-signature": headers["webhook-signature"][:-8] + "===="}


Tamper = Callable[[bytes, dict[str, str]], tuple[bytes, dict[str, str]]]


@pytest.mark.parametrize(
    "tamper",
    [
        _tamper_body,
        _tamper_id,
        _tamper_timestamp,
        _tamper_signature,
        _other_version,
        _truncated_signature,
    ],
)
def test_tampered_requests_are_rejected(tamper: Tamper) -> None:
    body, headers = tamper(b'{"amount": 100}', signed_headers(SECRET_A, b'{"amount": 100}'))
    with pytest.raises(NoMatchingSignature):
        verify(body, headers, SECRET_A)


@pytest.mark.parametrize(
    "signature",
    ["garbage", "v1,", "v1,!!!not-base64!!!", ",abc", "v1a,AAAA", "   "],
)
def test_malformed_signature_entries_do_not_match_and_do_not_crash(signature: str) -> None:
    headers = {**signed_headers(SECRET_A, b"{}"), "webhook-signature": signature}
    with pytest.raises(InvalidSignature):
        verify(b"{}", headers, SECRET_A)


def test_a_good_entry_among_bad_ones_verifies() -> None:
    headers = signed_headers(SECRET_A, b"{}")
    good = headers["webhook-signature"]
    headers["webhook-signature"] = f"garbage v1a,AAAA v1,!!!  v1,{'A' * 44} {good}"
    verify(b"{}", headers, SECRET_A)


# --- timestamps -------------------------------------------------------------------------

SIGNED_AT = 1_700_000_000


@pytest.mark.parametrize(
    ("offset", "tolerance", "accepted"),
    [
        (0, DEFAULT_TOLERANCE, True),
        (DEFAULT_TOLERANCE, DEFAULT_TOLERANCE, True),
        (-DEFAULT_TOLERANCE, DEFAULT_TOLERANCE, True),
        (DEFAULT_TOLERANCE + 1, DEFAULT_TOLERANCE, False),
        (-DEFAULT_TOLERANCE - 1, DEFAULT_TOLERANCE, False),
        (10.5, 10, False),
        (-10.5, 10, False),
        (3600, 7200, True),
    ],
)
def test_tolerance_in_both_directions(offset: float, tolerance: float, accepted: bool) -> None:
    headers = signed_headers(SECRET_A, b"{}", timestamp=SIGNED_AT)
    now = SIGNED_AT + offset
    if accepted:
        verify(b"{}", headers, SECRET_A, tolerance=tolerance, now=now)
    else:
        with pytest.raises(TimestampOutOfTolerance, match="past" if offset > 0 else "future"):
            verify(b"{}", headers, SECRET_A, tolerance=tolerance, now=now)


def test_default_now_is_the_current_time() -> None:
    with pytest.raises(TimestampOutOfTolerance, match="past"):
        verify(b"{}", signed_headers(SECRET_A, b"{}", timestamp=SIGNED_AT), SECRET_A)


@pytest.mark.parametrize(
    "timestamp", ["abc", "1.5", "-5", "+1700000000", "\uff11\uff17", "1e9", "9" * 40]
)
def test_malformed_timestamps_are_rejected(timestamp: str) -> None:
    headers = {**signed_headers(SECRET_A, b"{}"), "webhook-timestamp": timestamp}
    with pytest.raises(MalformedHeaders):
        verify(b"{}", headers, SECRET_A)


# --- headers ----------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
@pytest.mark.parametrize("how", ["absent", "empty"])
def test_missing_headers(missing: str, how: str) -> None:
    headers = signed_headers(SECRET_A, b"{}")
    if how == "absent":
        del headers[missing]
    else:
        headers[missing] = ""
    with pytest.raises(MissingHeaders, match=missing):
        verify(b"{}", headers, SECRET_A)


def test_missing_headers_are_all_named() -> None:
    with pytest.raises(MissingHeaders) as caught:
        verify(b"{}", {"content-type": "application/json"}, SECRET_A)
    assert str(caught.value) == (
        "missing headers: webhook-id, webhook-timestamp, webhook-signature"
    )


def _title_case(headers: dict[str, str]) -> dict[str, str]:
    return {name.title(): value for name, value in headers.items()}


def _upper_case(headers: dict[str, str]) -> dict[str, str]:
    return {name.upper(): value for name, value in headers.items()}


def _starlette(headers: dict[str, str]) -> Headers:
    return Headers(_title_case(headers))


def _httpx(headers: dict[str, str]) -> httpx.Headers:
    return httpx.Headers(_upper_case(headers))


@pytest.mark.parametrize("convert", [_title_case, _upper_case, _starlette, _httpx])
def test_header_names_are_case_insensitive(
    convert: Callable[[dict[str, str]], Mapping[str, str]],
) -> None:
    verify(b"{}", convert(signed_headers(SECRET_A, b"{}")), SECRET_A)


# --- secrets ----------------------------------------------------------------------------


def test_generate_secret() -> None:
    secret = generate_secret()
    assert secret.startswith(SECRET_PREFIX)
    assert len(decode_secret(secret)) == 32
    assert secret != generate_secret()
    Webhook(secret)  # the reference library accepts it


def test_decode_secret_prefix_whitespace_and_padding_are_optional() -> None:
    key = decode_secret(SECRET_A)
    assert decode_secret(SECRET_A.removeprefix(SECRET_PREFIX)) == key
    assert decode_secret(f"  {SECRET_A}\n") == key
    unpadded = SECRET_PREFIX + base64.b64encode(b"0123456789").decode().rstrip("=")
    assert decode_secret(unpadded) == b"0123456789"


BAD_SECRETS = [
    pytest.param("whsec_not*base64!", id="not-base64"),
    pytest.param("whsec_abc-_def", id="urlsafe-alphabet"),
    pytest.param(f"{SECRET_A},{SECRET_B}", id="comma-separated"),
    pytest.param("whsec_", id="prefix-only"),
    pytest.param("", id="empty"),
    pytest.param("whsec_A", id="impossible-length"),
]


@pytest.mark.parametrize("secret", BAD_SECRETS)
def test_bad_secrets_are_refused_without_echoing_them(secret: str) -> None:
    with pytest.raises(InvalidSecret) as caught:
        decode_secret(secret)
    assert isinstance(caught.value, ValueError)
    # The decoder's own error is not chained: nothing but our message reaches a log.
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None or caught.value.__suppress_context__
    _assert_hidden(secret, caught.value)


@pytest.mark.parametrize("secret", BAD_SECRETS)
def test_bad_secrets_are_refused_by_sign_and_verify(secret: str) -> None:
    with pytest.raises(InvalidSecret):
        Signer([SECRET_A, secret])
    with pytest.raises(InvalidSecret):
        sign([secret], MSG_ID, 1, b"")
    with pytest.raises(InvalidSecret):
        verify(b"", signed_headers(SECRET_A, b""), [secret])


def test_no_secrets_at_all_is_refused() -> None:
    with pytest.raises(InvalidSecret, match="at least one"):
        Signer([])


def _failures() -> list[InvalidSignature]:
    headers = signed_headers(SECRET_A, b"{}", timestamp=SIGNED_AT)
    attempts: list[Callable[[], None]] = [
        lambda: verify(b"{}", {}, SECRET_A),
        lambda: verify(b"{}", {**headers, "webhook-timestamp": "x"}, SECRET_A),
        lambda: verify(b"{}", headers, SECRET_A, now=SIGNED_AT + 10_000),
        lambda: verify(b"{}", headers, SECRET_A, now=SIGNED_AT - 10_000),
        lambda: verify(b"{!}", headers, SECRET_A, now=SIGNED_AT),
        lambda: verify(b"{}", headers, SECRET_B, now=SIGNED_AT),
    ]
    failures = []
    for attempt in attempts:
        with pytest.raises(InvalidSignature) as caught:
            attempt()
        failures.append(caught.value)
    return failures


def test_failures_are_distinguished_and_never_show_a_secret() -> None:
    failures = _failures()
    assert [type(f) for f in failures] == [
        MissingHeaders,
        MalformedHeaders,
        TimestampOutOfTolerance,
        TimestampOutOfTolerance,
        NoMatchingSignature,
        NoMatchingSignature,
    ]
    for failure in failures:
        for secret in (SECRET_A, SECRET_B):
            _assert_hidden(secret, failure)


@pytest.mark.parametrize("secrets", [[SECRET_A], [SECRET_A, SECRET_B]])
def test_signer_repr_hides_secrets(secrets: list[str]) -> None:
    signer = Signer(secrets)
    for secret in secrets:
        _assert_hidden(secret, signer)
    assert not hasattr(signer, "__dict__")


def test_public_api_is_reexported_from_the_package() -> None:
    for name in (
        "SECRET_PREFIX",
        "DEFAULT_TOLERANCE",
        "generate_secret",
        "decode_secret",
        "sign",
        "verify",
        "Signer",
        "InvalidSecret",
        "InvalidSignature",
    ):
        assert getattr(baton, name) is getattr(baton.signing, name)
    assert SECRET_PREFIX == "whsec_"
    assert DEFAULT_TOLERANCE == 300


def _assert_hidden(secret: str, thing: object) -> None:
    # Fragments shorter than this could turn up in any message by chance.
    needles = [n for n in (secret, secret.removeprefix(SECRET_PREFIX)) if len(n) >= 8]
    texts = [repr(thing), str(thing)]
    if isinstance(thing, BaseException):
        texts += [repr(arg) for arg in thing.args]
    for text in texts:
        for needle in needles:
            assert needle not in text
