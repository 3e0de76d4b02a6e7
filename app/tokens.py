"""Callback tokens: itsdangerous-signed capabilities naming one run of one step.

The key is a server secret kept in the database (shared by every process, never
given to users), so a handler that knows the webhook signing secret still cannot
forge a token for someone else's step.

A token is:

- **bound** to one attempt of one run of one step (workflow, step, run, attempt);
  the store answers 410 once the step no longer waits for that attempt, so a token
  is also **single-use**: the callback it carries is accepted once;
- **expiring**: it carries when it was issued and its lifetime, the workflow's
  timeout (at most ``MAX_LIFETIME``, 31 days). A workflow's deadline is never
  later than its timeout after any of its tokens was issued (its steps start after
  the workflow does, and a re-run restarts the clock), so a token outlives every
  wait it can legitimately end, heartbeats included, and no longer.

Exceptions::

    TokenError
    ├── InvalidToken   -- not made with this key (tampered, truncated, foreign): 403
    └── ExpiredToken   -- made with this key, but older than its lifetime: 410
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from itsdangerous import BadSignature, TimestampSigner, URLSafeTimedSerializer
from itsdangerous.encoding import base64_encode

from app.tenants import DEFAULT_NAMESPACE, is_namespace, namespace_of, public_id, scoped_id

SALT = "baton.callback.v1"
#: The longest any token lives: the longest workflow timeout (31 days).
MAX_LIFETIME = 31 * 86400
#: Processes on one database check tokens other processes issued; their clocks may
#: disagree by a little, which must not cut a legitimate wait short.
CLOCK_LEEWAY = 60


@dataclass(frozen=True, slots=True)
class CallbackClaim:
    #: The workflow's scoped id (see app.tenants).
    workflow_id: str
    step_id: str
    run_id: str
    attempt: int


class TokenError(Exception):
    """A callback token that must not be acted on."""


class InvalidToken(TokenError):
    """The token was not made by this server (tampered, truncated, or another key)."""


class ExpiredToken(TokenError):
    """The token was made by this server but has outlived its lifetime."""


class CallbackTokens:
    """Makes and checks callback tokens with one key; ``clock`` is for tests.

    Tokens carry the public workflow id, plus the namespace outside the default one.
    """

    def __init__(self, secret: str, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock

        class _Signer(TimestampSigner):
            def get_timestamp(self) -> int:
                return int(clock())

        self._serializer = URLSafeTimedSerializer(secret, salt=SALT, signer=_Signer)
        self._signer = self._serializer.make_signer(SALT)

    def __repr__(self) -> str:
        return "<CallbackTokens>"

    def make(self, claim: CallbackClaim, *, lifetime: float = MAX_LIFETIME) -> str:
        """A token for ``claim`` accepted for ``lifetime`` seconds (the workflow's timeout)."""
        seconds = min(MAX_LIFETIME, max(1, math.ceil(lifetime)))
        values: list[str | int] = [
            public_id(claim.workflow_id),
            claim.step_id,
            claim.run_id,
            claim.attempt,
            seconds,
        ]
        namespace = namespace_of(claim.workflow_id)
        if namespace != DEFAULT_NAMESPACE:
            values.append(namespace)
        # What ``self._serializer.dumps(values)`` makes, minus its attempt to compress
        # a payload this short (a zlib stream per token, on every step request).
        payload = base64_encode(orjson.dumps(values))
        return self._signer.sign(payload).decode("ascii")

    def load(self, token: str) -> CallbackClaim:
        """The claim a token carries.

        Raises:
            InvalidToken: the signature does not match (checked first, always).
            ExpiredToken: the token is older than its lifetime.
        """
        try:
            payload, issued = self._serializer.loads(token, return_timestamp=True)
            claim, lifetime = _parse(payload)
        except (BadSignature, ValueError, TypeError) as exc:
            raise InvalidToken("invalid callback token") from exc
        # The age is checked here rather than by itsdangerous's ``max_age``, which also
        # refuses a token from a few seconds in the future (another process's clock).
        age = self._clock() - issued.timestamp()
        if age > lifetime + CLOCK_LEEWAY:
            raise ExpiredToken(
                f"this callback token expired: it was issued {_duration(age)} ago and "
                f"was valid for {_duration(lifetime)} (the workflow's timeout)"
            )
        return claim


def _parse(payload: Any) -> tuple[CallbackClaim, float]:
    """[id, step, run, attempt, lifetime, namespace?]; tokens issued before they
    carried their lifetime are [id, step, run, attempt] (default namespace)."""
    if not isinstance(payload, list) or len(payload) not in (4, 5, 6):
        raise ValueError("not a callback token")
    workflow_id, step_id, run_id, attempt = payload[:4]
    # Issued before tokens carried their lifetime: the longest any token lives.
    lifetime: Any = payload[4] if len(payload) >= 5 else MAX_LIFETIME
    namespace = str(payload[5]) if len(payload) == 6 else DEFAULT_NAMESPACE
    if not is_namespace(namespace):
        raise ValueError("unexpected namespace")
    claim = CallbackClaim(
        scoped_id(namespace, str(workflow_id)), str(step_id), str(run_id), int(attempt)
    )
    return claim, min(float(lifetime), MAX_LIFETIME)


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"
