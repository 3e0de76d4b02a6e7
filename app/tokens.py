"""Callback tokens: itsdangerous-signed capabilities naming one run of one step.

The key is a server secret kept in the database (shared by every process, never
given to users), so a handler that knows the webhook signing secret still cannot
forge a token for someone else's step.
"""

from __future__ import annotations

from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer

from app.tenants import DEFAULT_NAMESPACE, is_namespace, namespace_of, public_id, scoped_id

SALT = "baton.callback.v1"


@dataclass(frozen=True, slots=True)
class CallbackClaim:
    #: The workflow's scoped id (see app.tenants).
    workflow_id: str
    step_id: str
    run_id: str
    attempt: int


class InvalidToken(Exception):
    """The token was not made by this server (tampered, truncated, or another key)."""


class CallbackTokens:
    """Tokens carry the public workflow id, plus the namespace outside the default one
    (so tokens made before namespaces existed still load)."""

    def __init__(self, secret: str) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt=SALT)

    def make(self, claim: CallbackClaim) -> str:
        values: list[str | int] = [
            public_id(claim.workflow_id),
            claim.step_id,
            claim.run_id,
            claim.attempt,
        ]
        namespace = namespace_of(claim.workflow_id)
        if namespace != DEFAULT_NAMESPACE:
            values.append(namespace)
        return self._serializer.dumps(values)

    def load(self, token: str) -> CallbackClaim:
        try:
            values = self._serializer.loads(token)
            if not isinstance(values, list) or len(values) not in (4, 5):
                raise ValueError("unexpected token contents")
            workflow_id, step_id, run_id, attempt = values[:4]
            namespace = str(values[4]) if len(values) == 5 else DEFAULT_NAMESPACE
            if not is_namespace(namespace):
                raise ValueError("unexpected namespace")
            return CallbackClaim(
                scoped_id(namespace, str(workflow_id)), str(step_id), str(run_id), int(attempt)
            )
        except (BadSignature, ValueError, TypeError) as exc:
            raise InvalidToken("invalid callback token") from exc
