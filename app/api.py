"""The HTTP API: ``/v1`` routes, health checks, and problem documents for every error."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from app.conditions import compile_condition
from app.dispatcher import Dispatcher
from app.engine import WorkflowStatus
from app.errors import (
    PROBLEM_CONTENT_TYPE,
    BadRequest,
    FieldError,
    Forbidden,
    Gone,
    NotFound,
    PayloadTooLarge,
    ProblemError,
    ServiceUnavailable,
    StoreError,
    Unauthorized,
    ValidationFailed,
)
from app.metrics import Metrics
from app.netguard import NetPolicy, check_url
from app.openapi import DOCS_ASSETS_PATH, DOCS_CSP, DOCS_PAGE, build_document, docs_assets
from app.schemas import (
    ID_PATTERN,
    MAX_BODY_BYTES,
    MAX_NAME_LENGTH,
    canonical_json,
    parse_callback_request,
    parse_cancel_request,
    parse_create_request,
)
from app.store import LIST_LIMIT_MAX, Job, Store, decode_cursor
from app.tenants import DEFAULT_NAMESPACE, scoped_id
from app.tokens import CallbackClaim, CallbackTokens, ExpiredToken, InvalidToken

log = logging.getLogger("baton.api")

#: How often an idle event stream sends a comment to keep proxies from closing it.
SSE_KEEPALIVE_SECONDS = 15.0
#: How often an event stream looks for new events.
SSE_POLL_SECONDS = 0.25
MAX_IDEMPOTENCY_KEY = 255
#: A bearer token longer than this is no key of ours (generated keys are 46 characters).
MAX_BEARER_TOKEN = 512
#: Where BearerAuth puts the authenticated namespace in the ASGI scope.
NAMESPACE_SCOPE_KEY = "baton.namespace"
#: Cancel and the other actions take a small options object at most.
MAX_ACTION_BODY_BYTES = 64 * 1024
#: A callback carries a result (at most 1 MiB) plus its envelope.
MAX_CALLBACK_BODY_BYTES = MAX_BODY_BYTES + 64 * 1024


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def problem_response(error: ProblemError, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(error.to_problem()),
        status_code=error.status,
        media_type=PROBLEM_CONTENT_TYPE,
        headers=headers,
    )


class Api:
    """The route handlers; holds the store and what they need to wake the dispatcher."""

    def __init__(
        self,
        store: Store,
        *,
        policy: NetPolicy,
        wake: Callable[[], None],
        stopping: asyncio.Event | None = None,
    ) -> None:
        self.store = store
        self.policy = policy
        self.wake = wake
        #: Set when the process is stopping: event streams end so shutdown is not held up.
        self.stopping = stopping or asyncio.Event()
        #: Set by the lifespan once the database (which keeps the token key) is open.
        self.tokens: CallbackTokens | None = None
        #: Set by the lifespan with the dispatcher it measures.
        self.metrics: Metrics | None = None
        #: Set by the lifespan: creates hand their root requests to it.
        self.dispatcher: Dispatcher | None = None
        #: The OpenAPI document, built on its first request.
        self._openapi: bytes | None = None

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/metrics", self.prometheus, methods=["GET"]),
            Route("/v1/workflows", self.create_workflow, methods=["POST"]),
            Route("/v1/workflows", self.list_workflows, methods=["GET"]),
            Route("/v1/workflows/{workflow_id}", self.get_workflow, methods=["GET"]),
            Route("/v1/workflows/{workflow_id}/events", self.events, methods=["GET"]),
            Route("/v1/workflows/{workflow_id}/steps/{step_id}", self.get_step, methods=["GET"]),
            Route(
                "/v1/workflows/{workflow_id}/steps/{step_id}/dependencies",
                self.get_dependencies,
                methods=["GET"],
            ),
            Route("/v1/workflows/{workflow_id}/cancel", self.cancel, methods=["POST"]),
            Route("/v1/workflows/{workflow_id}/retry", self.retry, methods=["POST"]),
            Route(
                "/v1/workflows/{workflow_id}/steps/{step_id}/retry",
                self.retry_step,
                methods=["POST"],
            ),
            Route("/v1/callbacks/{token}", self.callback, methods=["POST"]),
            Route("/v1/callbacks/{token}/heartbeat", self.heartbeat, methods=["POST"]),
            Route("/openapi.json", self.openapi, methods=["GET"]),
            Route("/docs", self.docs, methods=["GET"], include_in_schema=False),
            Mount(DOCS_ASSETS_PATH, app=docs_assets(), name="docs_assets"),
        ]

    # ----------------------------------------------------------------- health

    async def healthz(self, request: Request) -> Response:
        return JSON({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        try:
            await self.store.ping()
        except Exception as exc:
            log.warning("readiness check failed: %s", exc)
            return JSON({"status": "unavailable", "database": "unreachable"}, status_code=503)
        return JSON({"status": "ok", "database": "ok"})

    async def prometheus(self, request: Request) -> Response:
        if self.metrics is None:
            raise NotFound("metrics are not available until the server has started")
        body = self.metrics.render(await self.store.count_by_status())
        return Response(body, media_type=self.metrics.content_type)

    # ----------------------------------------------------------------- documentation

    async def openapi(self, request: Request) -> Response:
        if self._openapi is None:
            self._openapi = orjson.dumps(build_document(self.routes()))
        return Response(self._openapi, media_type="application/json")

    async def docs(self, request: Request) -> Response:
        return HTMLResponse(DOCS_PAGE, headers={"Content-Security-Policy": DOCS_CSP})

    # ----------------------------------------------------------------- workflows

    async def create_workflow(self, request: Request) -> Response:
        idempotency_key = request.headers.get("idempotency-key")
        if idempotency_key is not None:
            _check_idempotency_key(idempotency_key)
        namespace = _namespace(request)
        raw = await read_body(request, MAX_BODY_BYTES)
        spec, document = parse_create_request(
            raw, check_url=self._check_url, check_condition=_check_condition
        )
        request_hash = hashlib.sha256(canonical_json(document)).hexdigest()
        # Root requests go straight to this process's dispatcher when it has free slots.
        dispatcher = self.dispatcher
        # At most one slot per root: creates waiting together each get theirs.
        roots = sum(1 for step in spec.steps if not step.depends_on)
        slots = dispatcher.reserve(limit=roots) if dispatcher is not None else 0
        jobs: list[Job] = []
        try:
            body, created = await self.store.create_workflow(
                spec,
                request_hash=request_hash,
                idempotency_key=idempotency_key,
                handoff=slots,
                lease_seconds=dispatcher.lease_seconds if dispatcher is not None else 30.0,
                on_jobs=jobs.extend,
                # Roots this process claimed are sent at once; the claim loop is woken
                # only for those it could not take (no free slots).
                on_due=self.wake,
                namespace=namespace,
            )
        finally:
            if dispatcher is not None:
                dispatcher.release(slots, jobs)
        return JSON(
            body,
            status_code=201 if created else 200,
            headers={"Location": f"/v1/workflows/{body['id']}"},
        )

    def _check_url(self, url: str) -> None:
        check_url(url, self.policy)

    async def list_workflows(self, request: Request) -> Response:
        params = request.query_params
        errors: list[FieldError] = []
        status = params.get("status") or None
        if status is not None and status not in WorkflowStatus.__members__.values():
            allowed = ", ".join(s.value for s in WorkflowStatus)
            errors.append(FieldError("status", f"must be one of {allowed}"))
        limit = 50
        if "limit" in params:
            try:
                limit = int(params["limit"])
                if not 1 <= limit <= LIST_LIMIT_MAX:
                    raise ValueError
            except ValueError:
                errors.append(
                    FieldError("limit", f"must be a whole number from 1 to {LIST_LIMIT_MAX}")
                )
        cursor = params.get("cursor") or None
        if cursor is not None:
            try:
                decode_cursor(cursor)
            except ValueError:
                errors.append(FieldError("cursor", "is not a cursor this server handed out"))
        if errors:
            raise ValidationFailed(errors, "The query parameters are not valid.")
        name = params.get("name") or None
        if name is not None and (len(name) > MAX_NAME_LENGTH or "\x00" in name):
            # No workflow can have such a name (and PostgreSQL cannot compare with a NUL).
            return JSON({"items": [], "nextCursor": None})
        items, next_cursor = await self.store.list_workflows(
            status=status, name=name, limit=limit, cursor=cursor, namespace=_namespace(request)
        )
        return JSON({"items": items, "nextCursor": next_cursor})

    async def get_workflow(self, request: Request) -> Response:
        workflow_id = _workflow_id(request)
        document = await self.store.get_workflow(_scoped(request, workflow_id))
        if document is None:
            raise NotFound(f"no workflow '{workflow_id}'")
        return JSON(document)

    async def get_step(self, request: Request) -> Response:
        workflow_id = _workflow_id(request)
        step_id = _step_id(request)
        document = await self.store.get_step(_scoped(request, workflow_id), step_id)
        if document is None:
            raise NotFound(await self._missing(request, workflow_id, step_id))
        return JSON(document)

    async def get_dependencies(self, request: Request) -> Response:
        workflow_id = _workflow_id(request)
        step_id = _step_id(request)
        document = await self.store.get_dependencies(_scoped(request, workflow_id), step_id)
        if document is None:
            raise NotFound(await self._missing(request, workflow_id, step_id))
        return JSON(document)

    async def _missing(self, request: Request, workflow_id: str, step_id: str) -> str:
        if not await self.store.workflow_exists(_scoped(request, workflow_id)):
            return f"no workflow '{workflow_id}'"
        return f"workflow '{workflow_id}' has no step '{step_id}'"

    # ----------------------------------------------------------------- actions

    async def cancel(self, request: Request) -> Response:
        raw = await read_body(request, MAX_ACTION_BODY_BYTES)
        options = parse_cancel_request(raw)
        document = await self.store.cancel(
            _scoped(request, _workflow_id(request)), compensate=options.compensate
        )
        self.wake()
        return JSON(document)

    async def retry(self, request: Request) -> Response:
        document = await self.store.retry(_scoped(request, _workflow_id(request)))
        self.wake()
        return JSON(document)

    async def retry_step(self, request: Request) -> Response:
        document = await self.store.retry_step(
            _scoped(request, _workflow_id(request)), _step_id(request)
        )
        self.wake()
        return JSON(document)

    # ----------------------------------------------------------------- async steps

    async def callback(self, request: Request) -> Response:
        claim = self._claim(request)
        raw = await read_body(request, MAX_CALLBACK_BODY_BYTES)
        parse_callback_request(raw)
        answer = await self.store.async_result(claim, raw)
        self.wake()
        return JSON(answer)

    async def heartbeat(self, request: Request) -> Response:
        return JSON(await self.store.heartbeat(self._claim(request)))

    def _claim(self, request: Request) -> CallbackClaim:
        if self.tokens is None:
            raise NotFound("callbacks are not available until the server has started")
        try:
            return self.tokens.load(request.path_params["token"])
        except InvalidToken as exc:
            raise Forbidden("this callback token is not valid") from exc
        except ExpiredToken as exc:
            raise Gone(str(exc)) from exc

    # ----------------------------------------------------------------- events

    async def events(self, request: Request) -> Response:
        public = _workflow_id(request)
        workflow_id = _scoped(request, public)
        if not await self.store.workflow_exists(workflow_id):
            raise NotFound(f"no workflow '{public}'")
        if "text/event-stream" in request.headers.get("accept", ""):
            after = _last_event_id(request.headers.get("last-event-id"))
            return StreamingResponse(
                self._event_stream(request, workflow_id, after),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        return JSON({"items": await self.store.list_events(workflow_id)})

    async def _event_stream(
        self, request: Request, workflow_id: str, after: int | None
    ) -> AsyncIterator[bytes]:
        last = after
        idle = 0.0
        while True:
            items = await self.store.list_events(workflow_id, after=last, limit=500)
            for item in items:
                last = item["id"]
                yield _sse(item)
            if items:
                idle = 0.0
                continue
            document = await self.store.get_workflow_status(workflow_id)
            if document is None or (
                document in _FINAL_STATUSES
                and not await self.store.has_pending_deliveries(workflow_id)
            ):
                # Nothing more will happen: flush anything written meanwhile and end.
                for item in await self.store.list_events(workflow_id, after=last):
                    yield _sse(item)
                return
            if await request.is_disconnected():
                return
            if self.stopping.is_set():
                # The client reconnects (to another process) with Last-Event-ID.
                return
            await asyncio.sleep(SSE_POLL_SECONDS)
            idle += SSE_POLL_SECONDS
            if idle >= SSE_KEEPALIVE_SECONDS:
                idle = 0.0
                yield b": keep-alive\n\n"


_FINAL_STATUSES = frozenset(
    {
        WorkflowStatus.COMPLETED.value,
        WorkflowStatus.FAILED.value,
        WorkflowStatus.CANCELLED.value,
        WorkflowStatus.COMPENSATED.value,
        WorkflowStatus.COMPENSATION_FAILED.value,
    }
)


def _namespace(request: Request) -> str:
    """The namespace of the request's API key (set by BearerAuth)."""
    namespace = request.scope.get(NAMESPACE_SCOPE_KEY)
    if not isinstance(namespace, str):
        # Every /v1 route sits behind BearerAuth: no namespace means no valid key.
        raise Unauthorized("a valid API key is required: Authorization: Bearer <key>")
    return namespace


def _scoped(request: Request, workflow_id: str) -> str:
    """The stored id of the request's namespace's workflow ``workflow_id``.

    A workflow of another namespace has another stored id, so every lookup misses
    it exactly as it misses a workflow that does not exist (404, same document).
    """
    return scoped_id(_namespace(request), workflow_id)


def _workflow_id(request: Request) -> str:
    """The public workflow id in the path; one that breaks the id rules cannot exist (404)."""
    value: str = request.path_params["workflow_id"]
    if not _ID.fullmatch(value):
        raise NotFound(f"no workflow '{value[:140]}'")
    return value


def _step_id(request: Request) -> str:
    value: str = request.path_params["step_id"]
    if not _ID.fullmatch(value):
        raise NotFound(f"no step '{value[:140]}'")
    return value


_ID = re.compile(ID_PATTERN)


def _sse(item: dict[str, Any]) -> bytes:
    return (
        f"id: {item['id']}\nevent: {item['type']}\ndata: ".encode() + orjson.dumps(item) + b"\n\n"
    )


def _last_event_id(value: str | None) -> int | None:
    if value is None or not value.strip():
        return None
    try:
        event_id = int(value)
        if not 0 <= event_id < 2**63:
            raise ValueError(value)
    except ValueError as exc:
        raise BadRequest("Last-Event-ID must be an event id this server sent") from exc
    return event_id


_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _check_idempotency_key(key: str) -> None:
    if not 0 < len(key) <= MAX_IDEMPOTENCY_KEY:
        raise ValidationFailed(
            [FieldError("Idempotency-Key", f"must be 1 to {MAX_IDEMPOTENCY_KEY} characters")]
        )
    if _CONTROL_CHARACTERS.search(key):
        # HTTP servers refuse them in headers anyway, and PostgreSQL cannot store a NUL.
        raise ValidationFailed(
            [FieldError("Idempotency-Key", "must not contain control characters")]
        )


def _check_condition(source: str) -> None:
    compile_condition(source)


async def read_body(request: Request, limit: int) -> bytes:
    """Read the body, refusing more than ``limit`` bytes while reading (never buffer more)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise PayloadTooLarge(f"the request body is limited to {limit} bytes")
        except ValueError as exc:
            raise BadRequest("Content-Length is not a number") from exc
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the request body is limited to {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class BearerAuth:
    """ASGI middleware: every ``/v1`` request needs a known bearer key (callbacks excepted).

    A key from ``BATON_API_KEYS`` (or the generated ``data/api-key``) belongs to the
    ``default`` namespace; any other key is looked up, by its hash, among the keys
    stored in the database (``lookup`` answers its namespace, or None). A request
    without an ``Authorization`` header may instead carry a console session
    (``session`` answers its namespace, or None, and raises a ProblemError such as
    a 403 for a missing CSRF token). The namespace goes into the scope for the routes.
    """

    def __init__(
        self,
        app: ASGIApp,
        keys: list[str],
        lookup: Callable[[str], Awaitable[str | None]] | None = None,
        session: Callable[[Scope], Awaitable[str | None]] | None = None,
    ) -> None:
        self.app = app
        self._keys = [k.encode() for k in keys]
        self._lookup = lookup
        self._session = session

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        protected = path.startswith("/v1/") and not path.startswith("/v1/callbacks/")
        if scope["type"] == "http" and protected:
            try:
                namespace = await self._namespace(scope)
            except StoreError as exc:
                log.warning("could not check an API key: %s", exc)
                response = problem_response(
                    ServiceUnavailable("the database is not answering; try again shortly"),
                    headers={"Retry-After": "1"},
                )
                await response(scope, receive, send)
                return
            except ProblemError as exc:
                await problem_response(exc)(scope, receive, send)
                return
            if namespace is None:
                response = problem_response(
                    Unauthorized("a valid API key is required: Authorization: Bearer <key>"),
                    headers={"WWW-Authenticate": 'Bearer realm="baton"'},
                )
                await response(scope, receive, send)
                return
            scope[NAMESPACE_SCOPE_KEY] = namespace
        await self.app(scope, receive, send)

    async def _namespace(self, scope: Scope) -> str | None:
        token = _bearer_token(scope)
        if token is None:
            if self._session is not None and not _has_header(scope, b"authorization"):
                return await self._session(scope)
            return None
        # Compare against every key so timing says nothing about which matched.
        if any([hmac.compare_digest(token, k) for k in self._keys]):
            return DEFAULT_NAMESPACE
        if self._lookup is None or len(token) > MAX_BEARER_TOKEN:
            return None
        try:
            text = token.decode("ascii")
        except UnicodeDecodeError:
            return None  # generated keys are ASCII
        # Looked up by hash: the lookup's timing depends on the hash, not on the key.
        return await self._lookup(text)


def _has_header(scope: Scope, name: bytes) -> bool:
    return any(key == name for key, _ in scope.get("headers", []))


def _bearer_token(scope: Scope) -> bytes | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            token = token.strip()
            if scheme.lower() != b"bearer" or not token:
                return None
            return bytes(token)
    return None


async def problem_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProblemError)
    return problem_response(exc)


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return problem_response(NotFound(f"no route for {request.method} {request.url.path}"))
    # Starlette's own errors (405 with its Allow header, …) keep their status and headers.
    problem = {
        "type": "about:blank",
        "title": exc.detail if isinstance(exc.detail, str) else "Error",
        "status": exc.status_code,
        "detail": exc.detail if isinstance(exc.detail, str) else None,
        "errors": [],
    }
    return Response(
        orjson.dumps(problem),
        status_code=exc.status_code,
        media_type=PROBLEM_CONTENT_TYPE,
        headers=exc.headers,
    )


async def server_error_handler(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    problem = {
        "type": "about:blank",
        "title": "Internal Server Error",
        "status": 500,
        "detail": "the server could not handle this request; it has been logged",
        "errors": [],
    }
    return JSONResponse(problem, status_code=500, media_type=PROBLEM_CONTENT_TYPE)


ExceptionHandler = Callable[[Request, Exception], Awaitable[Response]]
