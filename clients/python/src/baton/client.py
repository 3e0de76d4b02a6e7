"""``Client`` and ``AsyncClient``: the whole API, resource by resource.

::

    from baton import Client

    with Client("http://127.0.0.1:8000", api_key=KEY) as client:
        doc = client.workflows.create({"steps": [{"id": "a", "url": "https://…"}]})
        final = client.workflows.wait(doc.id, timeout=60)

Both take ``base_url`` and ``api_key`` (default: the ``BATON_URL`` and ``BATON_API_KEY``
environment variables), ``timeout`` (seconds or an ``httpx.Timeout``), ``max_retries``
(see :mod:`baton._base` for what is retried), and ``transport`` / ``http_options`` passed
to ``httpx`` (a ``MockTransport`` in tests, proxies, certificates).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import httpx

from baton import _calls as calls
from baton._base import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    AsyncTransport,
    SyncTransport,
    build_http,
)
from baton.resources import (
    AsyncCallbacks,
    AsyncFlowControls,
    AsyncJobs,
    AsyncQueues,
    AsyncSchedules,
    AsyncWorkflows,
    Callbacks,
    FlowControls,
    Jobs,
    Queues,
    Schedules,
    Workflows,
)

__all__ = ["DEFAULT_URL", "AsyncClient", "Client"]

#: Where the client goes when neither ``base_url`` nor ``BATON_URL`` says.
DEFAULT_URL = "http://127.0.0.1:8000"


def _settings(
    base_url: str | None, api_key: str | None, timeout: float | httpx.Timeout | None
) -> tuple[str, str | None, httpx.Timeout]:
    url = base_url or os.environ.get("BATON_URL") or DEFAULT_URL
    key = api_key if api_key is not None else os.environ.get("BATON_API_KEY")
    if timeout is None:
        limits = DEFAULT_TIMEOUT
    elif isinstance(timeout, httpx.Timeout):
        limits = timeout
    else:
        limits = httpx.Timeout(timeout)
    return url.rstrip("/"), key or None, limits


class Client:
    """A synchronous Baton client; use it as a context manager or call ``close()``.

    Resources: ``workflows``, ``jobs``, ``queues``, ``schedules``, ``flow_control``,
    ``callbacks``. Thread-safe: one client may serve many threads (the worker does).
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
        transport: httpx.BaseTransport | None = None,
        http_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.base_url, api_key, limits = _settings(base_url, api_key, timeout)
        http = build_http(httpx.Client, self.base_url, limits, transport, http_options or {})
        self._transport = SyncTransport(http, api_key, limits, max_retries)
        self.workflows = Workflows(self._transport)
        self.jobs = Jobs(self._transport)
        self.queues = Queues(self._transport)
        self.schedules = Schedules(self._transport)
        self.flow_control = FlowControls(self._transport)
        self.callbacks = Callbacks(self._transport)

    def __repr__(self) -> str:
        return f"<Client {self.base_url}>"

    def health(self) -> dict[str, Any]:
        """``GET /healthz``: the process answers."""
        return self._transport.send(calls.server_document("/healthz"))

    def ready(self) -> dict[str, Any]:
        """``GET /readyz``: the server reaches its database (a 503 raises ProblemError)."""
        return self._transport.send(calls.server_document("/readyz"))

    def openapi(self) -> dict[str, Any]:
        """The server's OpenAPI document."""
        return self._transport.send(calls.server_document("/openapi.json"))

    def metrics(self) -> str:
        """The server's Prometheus metrics, as text."""
        return self._transport.send(calls.metrics())

    def close(self) -> None:
        self._transport.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncClient:
    """The asyncio twin of :class:`Client`: the same resources, awaited."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
        transport: httpx.AsyncBaseTransport | None = None,
        http_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.base_url, api_key, limits = _settings(base_url, api_key, timeout)
        http = build_http(httpx.AsyncClient, self.base_url, limits, transport, http_options or {})
        self._transport = AsyncTransport(http, api_key, limits, max_retries)
        self.workflows = AsyncWorkflows(self._transport)
        self.jobs = AsyncJobs(self._transport)
        self.queues = AsyncQueues(self._transport)
        self.schedules = AsyncSchedules(self._transport)
        self.flow_control = AsyncFlowControls(self._transport)
        self.callbacks = AsyncCallbacks(self._transport)

    def __repr__(self) -> str:
        return f"<AsyncClient {self.base_url}>"

    async def health(self) -> dict[str, Any]:
        return await self._transport.send(calls.server_document("/healthz"))

    async def ready(self) -> dict[str, Any]:
        return await self._transport.send(calls.server_document("/readyz"))

    async def openapi(self) -> dict[str, Any]:
        return await self._transport.send(calls.server_document("/openapi.json"))

    async def metrics(self) -> str:
        return await self._transport.send(calls.metrics())

    async def aclose(self) -> None:
        await self._transport.http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
