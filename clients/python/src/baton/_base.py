"""The request/response layer under both clients.

An operation is a :class:`Call`: method, path, query, body, headers, whether repeating it
is safe, and how to decode the answer. :class:`SyncTransport` and
:class:`AsyncTransport` send a call over ``httpx`` with the same rules, which live here
as plain functions: what to retry (:func:`retry_delay`), how an answer becomes a result
or a :class:`~baton.errors.ProblemError` (:func:`decode`).

Retries: a call is sent again after a connection that could not be opened (nothing was
sent), and — only when the call is idempotent — after a connection that broke, a
timeout, or a 429/502/503/504 answer (``Retry-After`` honoured, up to
``MAX_RETRY_AFTER``). Between attempts the client waits ``0.25 s · 2^n`` with full
jitter, at most ``MAX_BACKOFF``.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from baton import __version__
from baton.errors import APIConnectionError, APITimeoutError, InvalidResponse, ProblemError

T = TypeVar("T")

#: Seconds a call may take by default: 5 to connect, 30 for the rest.
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
#: How many times a failed call is sent again by default.
DEFAULT_MAX_RETRIES = 2
#: The longest wait between two attempts of one call (seconds).
MAX_BACKOFF = 8.0
#: The longest ``Retry-After`` honoured; a longer one fails the call at once.
MAX_RETRY_AFTER = 60.0
#: Answers an idempotent call is retried on.
RETRY_STATUSES = frozenset({429, 502, 503, 504})
USER_AGENT = f"baton-workflow-client/{__version__} (python)"

_NO_BODY: Any = object()


def identity(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class Call(Generic[T]):
    """One API operation, ready to send."""

    method: str
    path: str
    decode: Callable[[Any], T] = identity
    params: Mapping[str, Any] | None = None
    body: Any = _NO_BODY
    headers: Mapping[str, str] = field(default_factory=dict)
    #: Sending it twice has the effect of sending it once.
    idempotent: bool = False
    #: Seconds added to the read timeout (long polls).
    extra_timeout: float = 0.0
    #: Send the API key (not to callback URLs, which are capabilities of their own).
    authenticated: bool = True
    #: The answer is JSON (else its text is decoded).
    json_answer: bool = True


def path(template: str, *values: str) -> str:
    """``template`` with each ``{}`` replaced by a percent-encoded path segment."""
    return template.format(*(quote(str(value), safe="") for value in values))


def query(**params: Any) -> dict[str, Any]:
    """Query parameters without the ``None`` ones."""
    return {name: value for name, value in params.items() if value is not None}


def retry_delay(
    call: Call[Any],
    attempt: int,
    max_retries: int,
    *,
    error: httpx.TransportError | None = None,
    response: httpx.Response | None = None,
) -> float | None:
    """Seconds to wait before sending ``call`` again after ``attempt`` (0-based), or None."""
    if attempt >= max_retries:
        return None
    if error is not None:
        # A connection never opened means nothing was sent: always safe to try again.
        unsent = isinstance(error, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
        if not (unsent or call.idempotent):
            return None
    elif response is not None:
        if not call.idempotent or response.status_code not in RETRY_STATUSES:
            return None
        after = _retry_after(response.headers.get("retry-after"))
        if after is not None:
            return after if after <= MAX_RETRY_AFTER else None
    return random.uniform(0, min(MAX_BACKOFF, 0.25 * 2**attempt))


def wrap_transport_error(error: httpx.TransportError, request: str) -> APIConnectionError:
    kind = APITimeoutError if isinstance(error, httpx.TimeoutException) else APIConnectionError
    what = "timed out" if kind is APITimeoutError else "failed"
    return kind(f"{request} {what}: {type(error).__name__}: {error}".rstrip(": "))


def decode(call: Call[T], response: httpx.Response) -> T:
    """The result of ``call`` from its answer.

    Raises:
        ProblemError: the answer is a 4xx or 5xx.
        InvalidResponse: a success whose body is not JSON.
    """
    if response.status_code >= 400:
        raise ProblemError.from_response(response)
    if not call.json_answer:
        return call.decode(response.text)
    if not response.content:
        return call.decode(None)
    try:
        data = json.loads(response.content)
    except ValueError:
        raise InvalidResponse(
            f"{call.method} {call.path} answered {response.status_code} with a body that is "
            f"not JSON: {response.text[:200]!r}"
        ) from None
    try:
        return call.decode(data)
    except (TypeError, KeyError, AttributeError) as exc:
        raise InvalidResponse(
            f"{call.method} {call.path} answered {response.status_code} with an unexpected "
            f"document: {exc}"
        ) from exc


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class _Transport:
    """What both transports share: settings and how a call becomes request arguments."""

    def __init__(self, api_key: str | None, timeout: httpx.Timeout, max_retries: int) -> None:
        self.api_key = api_key
        self.timeout = timeout
        self.max_retries = max_retries

    def arguments(self, call: Call[Any], headers: Mapping[str, str] = {}) -> dict[str, Any]:
        merged = {**call.headers, **headers}
        if call.authenticated and self.api_key:
            merged["Authorization"] = f"Bearer {self.api_key}"
        arguments: dict[str, Any] = {
            "method": call.method,
            "url": call.path,
            "params": call.params,
            "headers": merged,
        }
        if call.body is not _NO_BODY:
            arguments["json"] = call.body
        if call.extra_timeout:
            arguments["timeout"] = httpx.Timeout(
                connect=self.timeout.connect,
                read=None if self.timeout.read is None else self.timeout.read + call.extra_timeout,
                write=self.timeout.write,
                pool=self.timeout.pool,
            )
        return arguments


def build_http(
    cls: type[httpx.Client] | type[httpx.AsyncClient],
    base_url: str,
    timeout: httpx.Timeout,
    transport: Any,
    http_options: Mapping[str, Any],
) -> Any:
    return cls(
        base_url=base_url.rstrip("/"),
        timeout=timeout,
        transport=transport,
        headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
        **http_options,
    )


class SyncTransport(_Transport):
    """Sends calls with an ``httpx.Client``."""

    def __init__(
        self,
        http: httpx.Client,
        api_key: str | None,
        timeout: httpx.Timeout,
        max_retries: int,
    ) -> None:
        super().__init__(api_key, timeout, max_retries)
        self.http = http

    def send(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            try:
                response = self.http.request(**self.arguments(call))
            except httpx.TransportError as exc:
                delay = retry_delay(call, attempt, self.max_retries, error=exc)
                if delay is None:
                    raise wrap_transport_error(exc, f"{call.method} {call.path}") from exc
            else:
                delay = retry_delay(call, attempt, self.max_retries, response=response)
                if delay is None:
                    return decode(call, response)
            time.sleep(delay)
            attempt += 1


class AsyncTransport(_Transport):
    """Sends calls with an ``httpx.AsyncClient``."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        api_key: str | None,
        timeout: httpx.Timeout,
        max_retries: int,
    ) -> None:
        super().__init__(api_key, timeout, max_retries)
        self.http = http

    async def send(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            try:
                response = await self.http.request(**self.arguments(call))
            except httpx.TransportError as exc:
                delay = retry_delay(call, attempt, self.max_retries, error=exc)
                if delay is None:
                    raise wrap_transport_error(exc, f"{call.method} {call.path}") from exc
            else:
                delay = retry_delay(call, attempt, self.max_retries, response=response)
                if delay is None:
                    return decode(call, response)
            await asyncio.sleep(delay)
            attempt += 1
