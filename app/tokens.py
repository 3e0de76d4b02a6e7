"""Callback tokens: itsdangerous-signed capabilities naming one run of one step.

The key is a server secret kept in the database (shared by every process, never
given to users), so a handler that knows the webhook signing secret still cannot
forge a token for someone else's step.
"""

from __future__ import annotations

from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer

SALT = "baton.callback.v1"


@dataclass(frozen=True, slots=True)
class CallbackClaim:
    workflow_id: str
    step_id: str
    run_id: str
    attempt: int


class InvalidToken(Exception):
    """The token was not made by this server (tampered, truncated, or another key)."""


class CallbackTokens:
    def __init__(self, secret: str) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt=SALT)

    def make(self, claim: CallbackClaim) -> str:
        return self._serializer.dumps(
            [claim.workflow_id, claim.step_id, claim.run_id, claim.attempt]
        )

    def load(self, token: str) -> CallbackClaim:
        try:
            workflow_id, step_id, run_id, attempt = self._serializer.loads(token)
        except (BadSignature, ValueError, TypeError) as exc:
            raise InvalidToken("invalid callback token") from exc
        return CallbackClaim(str(workflow_id), str(step_id), str(run_id), int(attempt))
