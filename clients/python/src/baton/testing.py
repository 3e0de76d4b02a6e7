"""Helpers for testing your own step handlers: requests signed as Baton signs them.

::

    from baton.testing import signed_request

    body, headers = signed_request({"workflowId": "wf_1", "stepId": "charge"}, SECRET)
    response = test_client.post("/jobs/charge", content=body, headers=headers)
"""

from __future__ import annotations

import json
import secrets as _random
import time
from collections.abc import Sequence
from typing import Any

from baton.signing import Signer

__all__ = ["signed_request"]


def signed_request(
    body: Any,
    secrets: str | Sequence[str] | Signer,
    *,
    msg_id: str | None = None,
    timestamp: float | None = None,
) -> tuple[bytes, dict[str, str]]:
    """The raw body and the headers of a request signed with ``secrets``.

    ``body`` is JSON-encoded unless it is already ``bytes``. ``msg_id`` defaults to a
    new ``msg_…`` id and ``timestamp`` (Unix seconds) to now. The headers are the three
    ``webhook-*`` ones plus ``content-type: application/json``.
    """
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    signer = secrets if isinstance(secrets, Signer) else Signer(secrets)
    headers = signer.headers(
        msg_id or f"msg_{_random.token_hex(16)}",
        int(time.time() if timestamp is None else timestamp),
        raw,
    )
    return raw, {**headers, "content-type": "application/json"}
