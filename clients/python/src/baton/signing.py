"""Standard Webhooks v1 signatures: the one implementation the server and handlers share.

A request carries three headers::

    webhook-id:        msg_2f1c...                 (same for every retry of one delivery)
    webhook-timestamp: 1763719205                  (Unix seconds, when it was signed)
    webhook-signature: v1,<base64> v1,<base64>     (one entry per secret, space-separated)

Each ``v1`` entry is ``base64(HMAC-SHA256(key, f"{id}.{timestamp}.".encode() + body))``
where ``key`` is the base64-decoded part of a ``whsec_<base64>`` secret. Signing with
every current secret lets a receiver hold either the old or the new one while secrets
rotate. Any Standard Webhooks library (``standardwebhooks`` on PyPI and npm) verifies
these signatures.

Exceptions::

    ValueError
    └── InvalidSecret              -- a secret is not ``whsec_`` + base64, or is empty
    InvalidSignature               -- a request must not be trusted
    ├── MissingHeaders             -- a webhook-* header is absent or empty
    ├── MalformedHeaders           -- webhook-timestamp is not Unix seconds
    ├── TimestampOutOfTolerance    -- signed too long ago, or too far in the future
    └── NoMatchingSignature        -- no signature matches any of the secrets

No message, repr or log line ever contains a secret or a key.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import re
import secrets as _random
import time
from collections.abc import Mapping, Sequence

from itsdangerous.signer import HMACAlgorithm

__all__ = [
    "DEFAULT_TOLERANCE",
    "ID_HEADER",
    "SECRET_PREFIX",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "InvalidSecret",
    "InvalidSignature",
    "MalformedHeaders",
    "MissingHeaders",
    "NoMatchingSignature",
    "Signer",
    "TimestampOutOfTolerance",
    "decode_secret",
    "generate_secret",
    "sign",
    "verify",
]

SECRET_PREFIX = "whsec_"
#: How far (seconds) a request's timestamp may be from the receiver's clock, either way.
DEFAULT_TOLERANCE = 300
SIGNATURE_VERSION = "v1"

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"

_SECRET_BYTES = 32
_HMAC_SHA256 = HMACAlgorithm(hashlib.sha256)
# Digits only: int() would also take "+1", " 1" or non-ASCII digits, and the signed
# content uses the header text as sent, so a lenient parse could accept a value the
# sender never produced.
_TIMESTAMP_RE = re.compile(r"[0-9]{1,15}")


class InvalidSecret(ValueError):
    """A signing secret is not ``whsec_`` followed by standard base64, or decodes to nothing."""


class InvalidSignature(Exception):
    """The request's signature headers do not prove it came from a holder of the secret."""


class MissingHeaders(InvalidSignature):
    """One of ``webhook-id``, ``webhook-timestamp``, ``webhook-signature`` is absent or empty."""


class MalformedHeaders(InvalidSignature):
    """``webhook-timestamp`` is not a whole number of Unix seconds."""


class TimestampOutOfTolerance(InvalidSignature):
    """The request was signed too long ago (a replay?) or too far in the future."""


class NoMatchingSignature(InvalidSignature):
    """None of the ``v1`` signatures matches the body under any of the secrets."""


def generate_secret() -> str:
    """Return a new random secret: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + _b64(_random.token_bytes(_SECRET_BYTES))


def decode_secret(secret: str) -> bytes:
    """Return the HMAC key inside ``secret``; the ``whsec_`` prefix is optional.

    Surrounding whitespace is ignored (secrets are often read from files) and missing
    base64 padding is tolerated, as other Standard Webhooks libraries do.

    Raises:
        InvalidSecret: the rest is not standard base64, or decodes to no bytes.
    """
    if not isinstance(secret, str):
        raise InvalidSecret(f"a signing secret must be a str, not {type(secret).__name__}")
    encoded = secret.strip().removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        # `from None`: the decoder's own message is not needed and keeps the traceback short.
        raise InvalidSecret(
            "a signing secret must be 'whsec_' followed by standard base64 "
            "(pass several secrets as a list, not one comma-separated string)"
        ) from None
    if not key:
        raise InvalidSecret("a signing secret must not be empty")
    return key


class Signer:
    """Signs and verifies with a fixed set of secrets, decoded once.

    Build one per set of secrets and reuse it: the server signs many requests a second
    and a handler verifies every request it gets.
    """

    __slots__ = ("_keys",)

    def __init__(self, secrets: str | Sequence[str]) -> None:
        """Decode ``secrets`` (one ``whsec_`` string or several, for rotation).

        Raises:
            InvalidSecret: no secrets were given, or one of them is malformed.
        """
        keys = tuple(decode_secret(s) for s in _as_tuple(secrets))
        if not keys:
            raise InvalidSecret("at least one signing secret is required")
        self._keys = keys

    def __repr__(self) -> str:
        return f"<Signer with {len(self._keys)} secret{'s' if len(self._keys) != 1 else ''}>"

    def sign(self, msg_id: str, timestamp: int, body: bytes) -> str:
        """Return the ``webhook-signature`` value: one ``v1,<base64>`` per secret."""
        content = _signed_content(msg_id, str(int(timestamp)), body)
        return " ".join(
            f"{SIGNATURE_VERSION},{_b64(_HMAC_SHA256.get_signature(key, content))}"
            for key in self._keys
        )

    def headers(self, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
        """Return the three Standard Webhooks headers for a request with ``body``."""
        return {
            ID_HEADER: msg_id,
            TIMESTAMP_HEADER: str(int(timestamp)),
            SIGNATURE_HEADER: self.sign(msg_id, timestamp, body),
        }

    def verify(
        self,
        body: bytes,
        headers: Mapping[str, str],
        *,
        tolerance: float = DEFAULT_TOLERANCE,
        now: float | None = None,
    ) -> None:
        """Check that ``body`` and ``headers`` were signed with one of this signer's secrets.

        ``headers`` may be any mapping; names are matched case-insensitively. ``now``
        (Unix seconds) defaults to the current time.

        Raises:
            InvalidSignature: one of its subclasses says why the request is refused.
        """
        msg_id = _header(headers, ID_HEADER)
        timestamp = _header(headers, TIMESTAMP_HEADER)
        signatures = _header(headers, SIGNATURE_HEADER)
        if not (msg_id and timestamp and signatures):
            missing = [
                name
                for name, value in (
                    (ID_HEADER, msg_id),
                    (TIMESTAMP_HEADER, timestamp),
                    (SIGNATURE_HEADER, signatures),
                )
                if not value
            ]
            noun = "headers" if len(missing) > 1 else "header"
            raise MissingHeaders(f"missing {noun}: {', '.join(missing)}")

        timestamp = timestamp.strip()
        if not _TIMESTAMP_RE.fullmatch(timestamp):
            raise MalformedHeaders(f"{TIMESTAMP_HEADER} must be whole Unix seconds")
        skew = (time.time() if now is None else now) - int(timestamp)
        if abs(skew) > tolerance:
            when = "in the past" if skew > 0 else "in the future"
            raise TimestampOutOfTolerance(
                f"{TIMESTAMP_HEADER} is {round(abs(skew), 1):g} s {when} "
                f"(tolerance {tolerance:g} s)"
            )

        received = _v1_signatures(signatures)
        if received:
            content = _signed_content(msg_id, timestamp, body)
            for key in self._keys:
                expected = _HMAC_SHA256.get_signature(key, content)
                # Compare against every entry without stopping early, so timing says
                # nothing about which entry, if any, came close.
                matched = False
                for candidate in received:
                    matched |= hmac.compare_digest(expected, candidate)
                if matched:
                    return
        raise NoMatchingSignature("no v1 signature matches the request under any signing secret")


def sign(secrets: str | Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """Return the ``webhook-signature`` value for ``body``: one ``v1,<base64>`` per secret.

    Prefer a long-lived :class:`Signer` where the same secrets sign many requests.
    """
    return _signer(_as_tuple(secrets)).sign(msg_id, timestamp, body)


def verify(
    body: bytes,
    headers: Mapping[str, str],
    secrets: str | Sequence[str],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> None:
    """Check that a request was signed with one of ``secrets``; see :meth:`Signer.verify`.

    Raises:
        InvalidSignature: one of its subclasses says why the request is refused.
        InvalidSecret: one of ``secrets`` is malformed.
    """
    _signer(_as_tuple(secrets)).verify(body, headers, tolerance=tolerance, now=now)


@functools.lru_cache(maxsize=32)
def _signer(secrets: tuple[str, ...]) -> Signer:
    # Callers of sign()/verify() usually pass the same few secrets on every call;
    # caching spares a base64 decode per secret per request.
    return Signer(secrets)


def _as_tuple(secrets: str | Sequence[str]) -> tuple[str, ...]:
    # A lone str is a Sequence[str] too; iterating it would treat each character as a secret.
    return (secrets,) if isinstance(secrets, str) else tuple(secrets)


def _signed_content(msg_id: str, timestamp: str, body: bytes) -> bytes:
    return f"{msg_id}.{timestamp}.".encode() + body


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _header(headers: Mapping[str, str], name: str) -> str | None:
    # Starlette and httpx headers already match case-insensitively; a plain dict needs a scan.
    value = headers.get(name)
    if value is None:
        for key, candidate in headers.items():
            if key.lower() == name:
                return candidate
    return value


def _v1_signatures(header: str) -> list[bytes]:
    # Entries of other versions (such as "v1a" asymmetric signatures) and undecodable
    # entries are skipped rather than refused: another entry may still match.
    found = []
    for entry in header.split():
        version, _, encoded = entry.partition(",")
        if version != SIGNATURE_VERSION or not encoded:
            continue
        try:
            found.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            continue
    return found
