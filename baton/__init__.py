"""Baton's user-side library: Standard Webhooks signing and step-handler helpers.

``baton.signing`` needs nothing beyond the standard library and itsdangerous, so the
server and any handler framework can use it. The Starlette helpers (``StepRequest``,
``StepFailed``, ``step_endpoint``, ``verify_request``) live in ``baton.starlette`` and
are importable from here too; Starlette is only imported when one of them is first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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
    from baton.starlette import StepFailed, StepRequest, step_endpoint, verify_request

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
    "StepFailed",
    "StepRequest",
    "TimestampOutOfTolerance",
    "decode_secret",
    "generate_secret",
    "sign",
    "step_endpoint",
    "verify",
    "verify_request",
]

_STARLETTE_NAMES = frozenset({"StepFailed", "StepRequest", "step_endpoint", "verify_request"})


def __getattr__(name: str) -> Any:
    # Lazy so that `import baton` (and the signing module) works without Starlette.
    if name in _STARLETTE_NAMES:
        return getattr(importlib.import_module("baton.starlette"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
