"""Baton's Python client: the REST client, step-handler helpers and the queue worker.

::

    from baton import AsyncClient, Client, ProblemError, Worker, verify

- :class:`Client` / :class:`AsyncClient` — every endpoint, resource by resource
  (``client.workflows``, ``client.jobs``, ``client.queues``, ``client.schedules``,
  ``client.flow_control``, ``client.callbacks``); errors are :class:`ProblemError`.
- :class:`Worker` — pulls a queue's jobs and runs a handler on each
  (:class:`Retry` and :class:`Fatal` steer a failure).
- :func:`verify` / :class:`Signer` — Standard Webhooks signatures (``baton.signing``),
  and helpers per framework: ``baton.starlette``, ``baton.fastapi``, ``baton.flask``,
  ``baton.django`` (each imports its framework only when used).

The Starlette helpers (``StepRequest``, ``StepFailed``, ``step_endpoint``,
``verify_request``) are importable from here too; Starlette is imported when one of
them is first used, and the client itself is imported when first used, so
``baton.signing`` stays light for the server and for handlers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from baton.handlers import StepFailed, StepRequest
from baton.signing import (
    DEFAULT_TOLERANCE,
    ID_HEADER,
    SECRET_PREFIX,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
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

if TYPE_CHECKING:
    from baton.client import AsyncClient, Client
    from baton.documents import Page
    from baton.errors import (
        APIConnectionError,
        APITimeoutError,
        BatonError,
        InvalidResponse,
        ProblemError,
        WaitTimeout,
    )
    from baton.starlette import step_endpoint, verify_request
    from baton.worker import Fatal, Retry, Worker

__all__ = [
    "DEFAULT_TOLERANCE",
    "ID_HEADER",
    "SECRET_PREFIX",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "APIConnectionError",
    "APITimeoutError",
    "AsyncClient",
    "BatonError",
    "Client",
    "Fatal",
    "InvalidResponse",
    "InvalidSecret",
    "InvalidSignature",
    "MalformedHeaders",
    "MissingHeaders",
    "NoMatchingSignature",
    "Page",
    "ProblemError",
    "Retry",
    "Signer",
    "StepFailed",
    "StepRequest",
    "TimestampOutOfTolerance",
    "WaitTimeout",
    "Worker",
    "__version__",
    "decode_secret",
    "generate_secret",
    "sign",
    "step_endpoint",
    "verify",
    "verify_request",
]

# Imported on first use: the server imports `baton.signing` only, and should not pay
# for httpx, the client or a web framework it does not use.
_LAZY = {
    "AsyncClient": "baton.client",
    "Client": "baton.client",
    "Page": "baton.documents",
    "APIConnectionError": "baton.errors",
    "APITimeoutError": "baton.errors",
    "BatonError": "baton.errors",
    "InvalidResponse": "baton.errors",
    "ProblemError": "baton.errors",
    "WaitTimeout": "baton.errors",
    "step_endpoint": "baton.starlette",
    "verify_request": "baton.starlette",
    "Fatal": "baton.worker",
    "Retry": "baton.worker",
    "Worker": "baton.worker",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
