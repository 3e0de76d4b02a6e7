"""Baton's exception tree, and how each class becomes a problem document.

    BatonError
    ├── ProblemError               -- answered to an API client as application/problem+json
    │   ├── BadRequest             (400)
    │   ├── Unauthorized           (401)
    │   ├── Forbidden              (403)
    │   ├── NotFound               (404)
    │   ├── Conflict               (409)
    │   ├── Gone                   (410)
    │   ├── PayloadTooLarge        (413)
    │   ├── UnsupportedMediaType   (415)
    │   ├── ValidationFailed       (422, with one entry per problem in ``errors``)
    │   └── ServiceUnavailable     (503)
    ├── StoreError                 -- the database gateway could not do what was asked
    │   └── TransitionRejected     -- a conditional update matched nothing (someone else won)
    └── ConfigurationError         -- settings that cannot work (refused at start-up)

Foreign errors (Tortoise, asyncpg, httpx) are wrapped at the boundary with
``raise X from exc`` so callers only ever catch these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

PROBLEM_CONTENT_TYPE = "application/problem+json"


class BatonError(Exception):
    """Base class of every error Baton raises on purpose."""


@dataclass(frozen=True)
class FieldError:
    """One problem with a request, located by a JSON-pointer-like path (``steps[1].url``)."""

    path: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}


class ProblemError(BatonError):
    """An error answered to the client as an RFC 9457 problem document."""

    status: ClassVar[int] = 400
    title: ClassVar[str] = "Bad Request"
    type_slug: ClassVar[str] = "bad-request"

    def __init__(
        self,
        detail: str,
        errors: list[FieldError] | None = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []
        #: Headers the answer carries (``Accept-Encoding`` with a 415, ...).
        self.headers = headers or {}

    def to_problem(self) -> dict[str, Any]:
        return {
            "type": f"https://baton.dev/problems/{self.type_slug}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "errors": [e.to_dict() for e in self.errors],
        }


class BadRequest(ProblemError):
    status = 400
    title = "Bad Request"
    type_slug = "bad-request"


class Unauthorized(ProblemError):
    status = 401
    title = "Unauthorized"
    type_slug = "unauthorized"


class NotFound(ProblemError):
    status = 404
    title = "Not Found"
    type_slug = "not-found"


class Conflict(ProblemError):
    status = 409
    title = "Conflict"
    type_slug = "conflict"


class Forbidden(ProblemError):
    status = 403
    title = "Forbidden"
    type_slug = "forbidden"


class Gone(ProblemError):
    status = 410
    title = "Gone"
    type_slug = "gone"


class PayloadTooLarge(ProblemError):
    status = 413
    title = "Payload Too Large"
    type_slug = "payload-too-large"


class UnsupportedMediaType(ProblemError):
    status = 415
    title = "Unsupported Media Type"
    type_slug = "unsupported-media-type"


class ValidationFailed(ProblemError):
    status = 422
    title = "Unprocessable Content"
    type_slug = "validation-failed"

    def __init__(self, errors: list[FieldError], detail: str | None = None) -> None:
        count = len(errors)
        super().__init__(
            detail or f"The request has {count} problem{'s' if count != 1 else ''}.", errors
        )


class ServiceUnavailable(ProblemError):
    status = 503
    title = "Service Unavailable"
    type_slug = "service-unavailable"


class StoreError(BatonError):
    """The database gateway failed; wraps the driver's own exception."""


class TransitionRejected(StoreError):
    """A conditional state change matched no row: the state moved on under us."""


class ConfigurationError(BatonError):
    """Settings that cannot work; raised at start-up with a message for the operator."""
