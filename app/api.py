"""The HTTP API: ``/v1`` routes, health checks, and problem documents for every error."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import re
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import BaseRoute, Match, Mount, Route
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
    UnsupportedMediaType,
    ValidationFailed,
)
from app.metrics import Metrics
from app.netguard import NetPolicy, check_url
from app.openapi import DOCS_ASSETS_PATH, DOCS_CSP, DOCS_PAGE, build_document, docs_assets
from app.schedule_api import ScheduleApi
from app.schemas import (
    ID_PATTERN,
    MAX_BATCH_BODY_BYTES,
    MAX_BODY_BYTES,
    MAX_NAME_LENGTH,
    canonical_json,
    parse_batch_request,
    parse_callback_request,
    parse_cancel_request,
    parse_create_request,
)
from app.store import (
    EVENTS_LIMIT_DEFAULT,
    EVENTS_LIMIT_MAX,
    LIST_LIMIT_DEFAULT,
    LIST_LIMIT_MAX,
    OutboundRequest,
    RenderedEvent,
    Store,
    decode_cursor,
)
from app.store.sql import database_unavailable
from app.tenants import DEFAULT_NAMESPACE, scoped_id
from app.tokens import CallbackClaim, CallbackTokens, ExpiredToken, InvalidToken

log = logging.getLogger("baton.api")

T = TypeVar("T")

#: How often an idle event stream sends a comment to keep proxies from closing it.
SSE_KEEPALIVE_SECONDS = 15.0
#: How often an event stream looks for new events.
SSE_POLL_SECONDS = 0.25
#: Events an event stream reads and sends at a time.
SSE_PAGE = 500
#: Pages of events (of streams and lists) being read and rendered at once in one
#: process: fifty clients replaying 20,000 events each queue for these, and every
#: other request goes between two pages instead of behind all of them.
REPLAY_CONCURRENCY = 2
#: Where ``GET /`` sends a browser: the console.
HOME_PAGE = "/ui"
MAX_IDEMPOTENCY_KEY = 255
#: A bearer token longer than this is no key of ours (generated keys are 46 characters).
MAX_BEARER_TOKEN = 512
#: Where BearerAuth puts the authenticated namespace in the ASGI scope.
NAMESPACE_SCOPE_KEY = "baton.namespace"
#: Cancel and the other actions take a small options object at most.
MAX_ACTION_BODY_BYTES = 64 * 1024
#: A callback carries a result (at most 1 MiB) plus its envelope.
MAX_CALLBACK_BODY_BYTES = MAX_BODY_BYTES + 64 * 1024


#: How long /readyz waits for the database before answering 503.
READY_TIMEOUT = 2.0


def _retrieve_exception(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


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
        #: Bounds the event pages read and rendered at once (``REPLAY_CONCURRENCY``).
        self._replays = asyncio.Semaphore(REPLAY_CONCURRENCY)
        #: The OpenAPI document, built on its first request (per root path).
        self._openapi: dict[str, bytes] = {}
        #: The readiness probe under way, shared by concurrent /readyz requests.
        self._ping: asyncio.Task[None] | None = None
        #: Set by the lifespan: tells the timekeeper (app.sweeper) of a delayed start or
        #: a schedule's tick that falls due, so it fires on time in this process.
        self.due_at: Callable[[datetime | None], None] = lambda when: None
        self.schedules = ScheduleApi(
            store,
            check_url=self._check_url,
            check_condition=_check_condition,
            read_body=read_body,
            namespace=_namespace,
            respond=JSON,
            whole_number=_whole_number_parameter,
            wake=lambda: self.wake(),
            due_at=lambda when: self.due_at(when),
        )

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/", self.home, methods=["GET"], include_in_schema=False),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/metrics", self.prometheus, methods=["GET"]),
            Route("/v1/workflows", self.create_workflow, methods=["POST"]),
            Route("/v1/workflows", self.list_workflows, methods=["GET"]),
            Route("/v1/workflows/batch", self.create_workflows, methods=["POST"]),
            Route("/v1/workflows/{workflow_id}", self.get_workflow, methods=["GET"]),
            Route("/v1/workflows/{workflow_id}/graph", self.get_graph, methods=["GET"]),
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
            *self.schedules.routes(),
            Route("/openapi.json", self.openapi, methods=["GET"]),
            Route("/docs", self.docs, methods=["GET"], include_in_schema=False),
            Mount(DOCS_ASSETS_PATH, app=docs_assets(), name="docs_assets"),
        ]

    async def home(self, request: Request) -> Response:
        return RedirectResponse(request.scope.get("root_path", "") + HOME_PAGE, status_code=302)

    # ----------------------------------------------------------------- health

    async def healthz(self, request: Request) -> Response:
        return JSON({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        # One probe at a time, never cancelled (cancelling a statement under way on
        # SQLite's worker thread would leave it running beside the next one); a probe
        # that does not answer in time is a 503 and finishes on its own.
        if self._ping is None or self._ping.done():
            self._ping = asyncio.create_task(self.store.ping(), name="baton-readyz")
            self._ping.add_done_callback(_retrieve_exception)
        done, _ = await asyncio.wait({self._ping}, timeout=READY_TIMEOUT)
        if not done:
            log.warning("readiness check: the database did not answer in %g s", READY_TIMEOUT)
            return JSON({"status": "unavailable", "database": "not answering"}, status_code=503)
        failure = self._ping.exception()
        if failure is not None:
            log.warning("readiness check failed: %s", failure)
            return JSON({"status": "unavailable", "database": "unreachable"}, status_code=503)
        return JSON({"status": "ok", "database": "ok"})

    async def prometheus(self, request: Request) -> Response:
        if self.metrics is None:
            raise NotFound("metrics are not available until the server has started")
        body = self.metrics.render(await self.store.count_by_status())
        return Response(body, media_type=self.metrics.content_type)

    # ----------------------------------------------------------------- documentation

    async def openapi(self, request: Request) -> Response:
        root_path: str = request.scope.get("root_path", "")
        if root_path not in self._openapi:
            document = build_document(self.routes())
            if root_path:
                # Behind a proxy's path prefix, "try it out" must call the prefixed URLs.
                document["servers"] = [{"url": root_path}]
            self._openapi[root_path] = orjson.dumps(document)
        return Response(self._openapi[root_path], media_type="application/json")

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
        body, created = await self._handing_off(
            sum(1 for step in spec.steps if not step.depends_on),
            partial(
                self.store.create_workflow,
                spec,
                request_hash=request_hash,
                idempotency_key=idempotency_key,
                namespace=namespace,
            ),
        )
        if body["startAt"] is not None and body["status"] == WorkflowStatus.PENDING:
            self.due_at(body_time(body["startAt"]))
        return JSON(
            body,
            status_code=201 if created else 200,
            headers={"Location": f"{request.scope.get('root_path', '')}/v1/workflows/{body['id']}"},
        )

    async def create_workflows(self, request: Request) -> Response:
        """``POST /v1/workflows/batch``: every workflow in one transaction, or none."""
        namespace = _namespace(request)
        raw = await read_body(request, MAX_BATCH_BODY_BYTES)
        items = parse_batch_request(
            raw, check_url=self._check_url, check_condition=_check_condition
        )
        hashed = [
            (spec, hashlib.sha256(canonical_json(document)).hexdigest()) for spec, document in items
        ]
        documents, created = await self._handing_off(
            sum(1 for spec, _ in items for step in spec.steps if not step.depends_on),
            partial(self.store.create_workflows, hashed, namespace=namespace),
        )
        starts = [d["startAt"] for d in documents if d["status"] == WorkflowStatus.PENDING]
        if starts:
            self.due_at(min(body_time(start) for start in starts if start is not None))
        return JSON({"items": documents}, status_code=201 if created else 200)

    async def _handing_off(self, roots: int, create: Callable[..., Awaitable[T]]) -> T:
        """Run a store create that may claim its root requests for this process.

        Root requests go straight to this process's dispatcher when it has free slots:
        at most one slot per root (creates waiting together each get theirs). Roots
        claimed are sent at once; the claim loop is woken only for those the create
        could not take (no free slots).
        """
        dispatcher = self.dispatcher
        slots = dispatcher.reserve(limit=roots) if dispatcher is not None else 0
        handed: list[OutboundRequest] = []
        try:
            return await create(
                handoff=slots,
                lease_seconds=dispatcher.lease_seconds if dispatcher is not None else 30.0,
                on_requests=handed.extend,
                on_due=self.wake,
            )
        finally:
            if dispatcher is not None:
                dispatcher.release(slots, handed)

    def _check_url(self, url: str) -> None:
        check_url(url, self.policy)

    async def list_workflows(self, request: Request) -> Response:
        params = request.query_params
        errors: list[FieldError] = []
        status = params.get("status") or None
        if status is not None and status not in WorkflowStatus.__members__.values():
            allowed = ", ".join(s.value for s in WorkflowStatus)
            errors.append(FieldError("status", f"must be one of {allowed}"))
        limit = _whole_number_parameter(params, "limit", LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX, errors)
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

    async def get_graph(self, request: Request) -> Response:
        workflow_id = _workflow_id(request)
        document = await self.store.workflow_graph(_scoped(request, workflow_id))
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
        stream = "text/event-stream" in request.headers.get("accept", "")
        if stream:
            after = _last_event_id(request.headers.get("last-event-id"))
        else:
            after, limit = _event_page_parameters(request)
        if not await self.store.workflow_exists(workflow_id):
            raise NotFound(f"no workflow '{public}'")
        if stream:
            return StreamingResponse(
                self._event_stream(request, workflow_id, after),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        page = await self._event_page(workflow_id, after, limit + 1)
        more = len(page) > limit
        page = page[:limit]
        next_after = str(page[-1].id).encode() if more else b"null"
        body = b'{"items":[' + b",".join(e.json for e in page) + b'],"nextAfter":' + next_after
        return Response(body + b"}", media_type="application/json")

    async def _event_page(
        self, workflow_id: str, after: int | None, limit: int
    ) -> list[RenderedEvent]:
        """A page of events, read and rendered in turn with the other pages being served."""
        async with self._replays:
            return await self.store.event_page(workflow_id, after=after, limit=limit)

    async def _event_stream(
        self, request: Request, workflow_id: str, after: int | None
    ) -> AsyncIterator[bytes]:
        last = after
        idle = 0.0
        while True:
            page = await self._event_page(workflow_id, last, SSE_PAGE)
            if page:
                last = page[-1].id
                # One write per page: a send per event costs more than the event.
                yield b"".join(_sse(event) for event in page)
                idle = 0.0
                continue
            document = await self.store.get_workflow_status(workflow_id)
            if document is None or (
                document in _FINAL_STATUSES
                and not await self.store.has_pending_deliveries(workflow_id)
            ):
                # Nothing more will happen: flush anything written meanwhile and end.
                while page := await self._event_page(workflow_id, last, SSE_PAGE):
                    last = page[-1].id
                    yield b"".join(_sse(event) for event in page)
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


def body_time(value: str) -> datetime:
    """A time of a document (ISO 8601 with a Z) as a datetime."""
    return datetime.fromisoformat(value)


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


def _sse(event: RenderedEvent) -> bytes:
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event.id, event.type.encode(), event.json)


def _event_page_parameters(request: Request) -> tuple[int | None, int]:
    """``after`` and ``limit`` of ``GET …/events`` (422 naming each bad one)."""
    params = request.query_params
    errors: list[FieldError] = []
    after = None
    if "after" in params:
        after = _event_id(params["after"])
        if after is None:
            errors.append(FieldError("after", "must be an event id (a whole number from 0)"))
    limit = _whole_number_parameter(params, "limit", EVENTS_LIMIT_DEFAULT, EVENTS_LIMIT_MAX, errors)
    if errors:
        raise ValidationFailed(errors, "The query parameters are not valid.")
    return after, limit


def _whole_number_parameter(
    params: Mapping[str, str], name: str, default: int, most: int, errors: list[FieldError]
) -> int:
    """An integer query parameter from 1 to ``most``; ``3`` or ``3.0``, as in JSON Schema."""
    if name not in params:
        return default
    text = params[name].strip()
    number = float(text) if _DECIMAL.fullmatch(text) else math.nan
    if not (number.is_integer() and 1 <= number <= most):
        errors.append(FieldError(name, f"must be a whole number from 1 to {most}"))
        return default
    return int(number)


_DECIMAL = re.compile(r"-?[0-9]{1,20}(\.[0-9]{0,20})?([eE][+-]?[0-9]{1,3})?")


def _last_event_id(value: str | None) -> int | None:
    """The event id of ``Last-Event-ID``; present but empty or not an id is a 400."""
    if value is None:
        return None
    event_id = _event_id(value)
    if event_id is None:
        raise BadRequest("Last-Event-ID must be an event id this server sent")
    return event_id


def _event_id(value: str) -> int | None:
    """``value`` as an event id (digits only, below 2**63), or None."""
    if not (value.isascii() and value.isdigit()) or len(value) > 19:
        return None
    event_id = int(value)
    return event_id if event_id < 2**63 else None


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


#: ``Content-Encoding`` values of a request body that are decoded (``x-gzip`` is gzip,
#: RFC 9110 §8.4.1.3); ``identity`` means none.
GZIP_ENCODINGS = frozenset({"gzip", "x-gzip"})


async def read_body(request: Request, limit: int) -> bytes:
    """Read the body, refusing more than ``limit`` bytes while reading (never buffer more).

    A gzip body (``Content-Encoding: gzip``) is decompressed as it arrives and
    ``limit`` applies to the decoded bytes: a small body that inflates past it is
    refused as soon as it does, without ever holding more than ``limit`` bytes.
    Any other encoding is a 415.
    """
    gzip = _gzip_encoded(request)
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise PayloadTooLarge(f"the request body is limited to {limit} bytes")
        except ValueError as exc:
            raise BadRequest("Content-Length is not a number") from exc
    if gzip:
        return await _read_gzip(request, limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the request body is limited to {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _gzip_encoded(request: Request) -> bool:
    """Whether the body is gzip; raises ``UnsupportedMediaType`` for another encoding."""
    codings = [
        coding.strip().lower()
        for value in request.headers.getlist("content-encoding")
        for coding in value.split(",")
    ]
    codings = [coding for coding in codings if coding and coding != "identity"]
    if not codings:
        return False
    if len(codings) == 1 and codings[0] in GZIP_ENCODINGS:
        return True
    raise UnsupportedMediaType(
        f"Content-Encoding {', '.join(codings)!r} is not supported; send the body "
        "as it is, or with Content-Encoding: gzip",
        headers={"Accept-Encoding": "gzip"},
    )


async def _read_gzip(request: Request, limit: int) -> bytes:
    """Decompress a gzip body (one member or several) as it arrives, at most ``limit``
    bytes of output in all."""
    too_large = PayloadTooLarge(f"the request body is limited to {limit} bytes once decompressed")
    decoder = zlib.decompressobj(wbits=_GZIP_WBITS)
    chunks: list[bytes] = []
    size = received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise too_large  # more compressed bytes than the decoded limit
            data = chunk
            while data:
                # Never more out of one call than what is left under the limit, plus one
                # byte to tell "at the limit" from "over it".
                piece = decoder.decompress(data, limit - size + 1)
                size += len(piece)
                if size > limit:
                    raise too_large
                chunks.append(piece)
                data = decoder.unconsumed_tail
                if decoder.eof and not data:
                    # The next member of a multi-member body, if any.
                    data = decoder.unused_data
                    if data:
                        decoder = zlib.decompressobj(wbits=_GZIP_WBITS)
    except zlib.error as exc:
        raise BadRequest(f"the request body is not valid gzip data: {exc}") from exc
    if received and not decoder.eof:
        raise BadRequest("the request body is not valid gzip data: it ends too early")
    return b"".join(chunks)


#: zlib's window size for a gzip header and trailer (16 + the largest window).
_GZIP_WBITS = 16 + zlib.MAX_WBITS


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
        path = route_path(scope)
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


def route_path(scope: Scope) -> str:
    """The path the routes see: behind ``--root-path``, ``scope["path"]`` starts with it.

    The same rule as Starlette's router, which matches routes on the path with the
    root path taken off.
    """
    path: str = scope.get("path", "")
    root = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        return path[len(root) :] or "/"
    return path


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
    return problem_response(exc, exc.headers or None)


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return problem_response(NotFound(f"no route for {request.method} {request.url.path}"))
    headers = exc.headers
    if exc.status_code == 405:
        # Starlette names the methods of the first route on the path; a path served by
        # one route per method (GET and POST /v1/workflows) allows all of them.
        headers = {**(headers or {}), "Allow": ", ".join(_allowed_methods(request))}
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
        headers=headers,
    )


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves on the request's path, sorted."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.methods:
            match, _ = route.matches(request.scope)
            if match is not Match.NONE:
                methods |= route.methods
    return sorted(methods)


async def server_error_handler(request: Request, exc: Exception) -> Response:
    if database_unavailable(exc):
        log.warning("the database could not serve %s %s: %s", request.method, request.url.path, exc)
        return problem_response(
            ServiceUnavailable("the database is not answering; try again shortly"),
            headers={"Retry-After": "1"},
        )
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
