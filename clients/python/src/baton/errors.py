"""The exceptions the client raises.

::

    BatonError
    ├── ProblemError            -- the server answered an error status (a problem document)
    ├── APIConnectionError      -- no answer: the server could not be reached, or the
    │   │                          connection broke (after the retries the call allows)
    │   └── APITimeoutError     -- no answer within the timeout
    ├── InvalidResponse         -- a success answer that is not the JSON the API promises
    └── WaitTimeout             -- ``wait()`` gave up before the workflow ended
                                   (also a ``TimeoutError``)

Every 4xx and 5xx answer is a :class:`ProblemError`, built from the answer's RFC 9457
problem document (``type``, ``title``, ``status``, ``detail``, ``errors``); an answer
without one (a proxy's 502 page, say) gets a title from its status and a detail from
its text. Foreign exceptions are wrapped at the boundary (``raise … from exc``), so the
original stays in ``__cause__``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import httpx

__all__ = [
    "APIConnectionError",
    "APITimeoutError",
    "BatonError",
    "FieldError",
    "InvalidResponse",
    "ProblemError",
    "WaitTimeout",
]

#: How much of a non-problem error body goes into ``detail``.
_DETAIL_EXCERPT = 300


class BatonError(Exception):
    """Base class of every error the client raises."""


@dataclass(frozen=True)
class FieldError:
    """One entry of a problem's ``errors``: where (``path``) and what is wrong."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ProblemError(BatonError):
    """The server answered a 4xx or 5xx status.

    Attributes:
        status: the HTTP status code.
        title: the problem's title (the status text).
        detail: one sentence about this occurrence.
        errors: one :class:`FieldError` per problem found (422 answers), else empty.
        type: the URI naming the kind of problem (``about:blank`` when absent).
        code: the last part of ``type`` (``not-found``, ``conflict``, …), or a code the
            document carries itself (such as ``lease_lost``).
        document: the whole problem document, unknown fields included.
        response: the ``httpx.Response`` it came from, when there was one.
    """

    def __init__(
        self,
        status: int,
        title: str,
        detail: str = "",
        errors: list[FieldError] | None = None,
        *,
        type: str = "about:blank",
        document: Mapping[str, Any] | None = None,
        response: httpx.Response | None = None,
    ) -> None:
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = list(errors or [])
        self.type = type
        self.document = dict(document or {})
        self.response = response
        super().__init__(self._message())

    @property
    def code(self) -> str:
        own = self.document.get("code")
        if isinstance(own, str) and own:
            return own
        return self.type.rstrip("/").rsplit("/", 1)[-1]

    @classmethod
    def from_document(
        cls, document: Mapping[str, Any], *, status: int, response: httpx.Response | None = None
    ) -> ProblemError:
        """Build one from a parsed problem document (missing fields get defaults)."""
        raw_status = document.get("status")
        status = raw_status if isinstance(raw_status, int) else status
        title = document.get("title")
        detail = document.get("detail")
        return cls(
            status,
            title if isinstance(title, str) and title else _reason(status),
            detail if isinstance(detail, str) else "",
            _field_errors(document.get("errors")),
            type=str(document.get("type") or "about:blank"),
            document=document,
            response=response,
        )

    @classmethod
    def from_response(cls, response: httpx.Response) -> ProblemError:
        """Build one from an error answer, with or without a problem document."""
        try:
            document = json.loads(response.content) if response.content else None
        except ValueError:
            document = None
        if isinstance(document, dict):
            return cls.from_document(document, status=response.status_code, response=response)
        text = " ".join(response.text.split())[:_DETAIL_EXCERPT]
        return cls(response.status_code, _reason(response.status_code), text, response=response)

    def _message(self) -> str:
        head = f"{self.status} {self.title}"
        if self.detail:
            head += f": {self.detail}"
        if self.errors:
            head += " (" + "; ".join(str(error) for error in self.errors) + ")"
        return head


class APIConnectionError(BatonError):
    """The request got no answer: refused, reset, DNS failed, or the stream broke."""


class APITimeoutError(APIConnectionError):
    """The request got no answer within the client's timeout."""


class InvalidResponse(BatonError):
    """A success answer whose body is not the JSON the API promises."""


class WaitTimeout(BatonError, TimeoutError):
    """``wait()`` gave up; ``document`` is the last status document it read."""

    def __init__(self, message: str, document: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.document = document


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


def _field_errors(value: Any) -> list[FieldError]:
    if not isinstance(value, list):
        return []
    found = []
    for entry in value:
        if isinstance(entry, Mapping):
            found.append(FieldError(str(entry.get("path") or ""), str(entry.get("message", ""))))
        elif isinstance(entry, str):
            found.append(FieldError("", entry))
    return found
