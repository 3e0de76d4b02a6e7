"""The OpenAPI 3.1 document of the HTTP API, and the interactive page that shows it.

Request bodies are described by the pydantic models that validate them
(``app.schemas``), answers by the models of ``app.documents``. Each route of
``Api.routes()`` is described by an ``Operation`` filed under the route's name;
``build_document`` refuses a route it has no description of, so a route cannot
ship undocumented.

``/docs`` is Swagger UI, served from the files of the ``swagger-ui-py`` package:
nothing is fetched from another host, so the page works offline.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from starlette.routing import BaseRoute, Route
from starlette.staticfiles import StaticFiles

from app import __version__
from app.documents import (
    CallbackAnswer,
    Dependencies,
    EventList,
    GraphDocument,
    Health,
    HeartbeatAnswer,
    Problem,
    Readiness,
    ScheduleDocument,
    SchedulePage,
    StepDetail,
    WorkflowBatch,
    WorkflowDocument,
    WorkflowPage,
)
from app.engine import WorkflowStatus
from app.errors import PROBLEM_CONTENT_TYPE
from app.schemas import (
    ID_PATTERN,
    MAX_BATCH_BODY_BYTES,
    MAX_BATCH_STEPS,
    MAX_BATCH_WORKFLOWS,
    SCHEDULE_ID_PATTERN,
    BatchCreate,
    CallbackRequest,
    CancelRequest,
    NoteRequest,
    ScheduleSpec,
    WorkflowCreate,
)
from app.store import EVENTS_LIMIT_DEFAULT, EVENTS_LIMIT_MAX, LIST_LIMIT_MAX

OPENAPI_VERSION = "3.1.0"
#: Where the Swagger UI files are served.
DOCS_ASSETS_PATH = "/docs/assets"
BEARER = "bearerAuth"


@dataclass(frozen=True)
class Operation:
    """What the document says about one route and method, besides its path."""

    operation_id: str
    summary: str
    tag: str
    #: Status code -> description, for answers with a document (``answers``) or a
    #: problem document (``problems``).
    answers: dict[int, str]
    problems: dict[int, str] = field(default_factory=dict)
    #: The model of the JSON answers in ``answers``.
    model: type[BaseModel] | None = None
    description: str | None = None
    #: Whether the route needs an API key (every ``/v1`` route but callbacks).
    auth: bool = True
    body: type[BaseModel] | None = None
    body_required: bool = True
    body_example: Any = None
    parameters: tuple[dict[str, Any], ...] = ()
    #: Media types of the 200 answer besides the model's JSON (or instead of it).
    alternatives: dict[str, dict[str, Any]] = field(default_factory=dict)
    headers: dict[str, dict[str, Any]] = field(default_factory=dict)


# --------------------------------------------------------------------- parameters

#: The body of the create example; the path parameters' examples name it and its steps.
CREATE_EXAMPLE: dict[str, Any] = {
    "id": "order-123",
    "name": "order-processing",
    "steps": [
        {"id": "validate", "url": "https://shop.example/jobs/validate"},
        {
            "id": "charge",
            "url": "https://shop.example/jobs/charge",
            "dependsOn": ["validate"],
            "retries": {"maxAttempts": 3, "backoff": "exponential", "delay": 1, "maxDelay": 60},
            "timeout": 30,
            "compensation": "https://shop.example/jobs/refund",
            "when": "context.total > 0",
        },
    ],
    "context": {"orderId": "order_123", "total": 4200},
    "onComplete": "https://shop.example/hooks/done",
    "onError": "https://shop.example/hooks/failed",
    "timeout": 3600,
    "saga": True,
}

_ID_SCHEMA = {"type": "string", "pattern": ID_PATTERN}
#: Path parameters by their name in the route; the document names them in camelCase.
_PATH_PARAMETERS: dict[str, dict[str, Any]] = {
    "workflow_id": {
        "description": "The workflow's id.",
        "schema": _ID_SCHEMA,
        "example": CREATE_EXAMPLE["id"],
    },
    "step_id": {
        "description": "The step's id.",
        "schema": _ID_SCHEMA,
        "example": CREATE_EXAMPLE["steps"][1]["id"],
    },
    "token": {
        "description": "The token in the step request's `callbackUrl`.",
        "schema": {"type": "string"},
    },
    "schedule_id": {
        "description": "The schedule's id (its workflows are `{scheduleId}-{YYYYMMDDTHHMMSSZ}`).",
        "schema": {"type": "string", "pattern": SCHEDULE_ID_PATTERN},
        "example": "nightly-report",
    },
}

_LIST_PARAMETERS = (
    {
        "name": "status",
        "in": "query",
        "description": "Only workflows with this status.",
        "schema": {"type": "string", "enum": [s.value for s in WorkflowStatus]},
    },
    {
        "name": "name",
        "in": "query",
        "description": "Only workflows with exactly this name.",
        "schema": {"type": "string"},
    },
    {
        "name": "limit",
        "in": "query",
        "description": "Page size.",
        "schema": {"type": "integer", "minimum": 1, "maximum": LIST_LIMIT_MAX, "default": 50},
    },
    {
        "name": "cursor",
        "in": "query",
        "description": "The `nextCursor` of the previous page.",
        "schema": {"type": "string"},
    },
)
_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "description": "Makes a create without an `id` repeatable: the same key and body "
    "answer the workflow first created. 1 to 255 characters, no control characters.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}
_EVENT_PARAMETERS = (
    {
        "name": "after",
        "in": "query",
        "description": "Only the events after this event id (the `nextAfter` of the "
        "previous page).",
        "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
    },
    {
        "name": "limit",
        "in": "query",
        "description": "Page size.",
        "schema": {
            "type": "integer",
            "minimum": 1,
            "maximum": EVENTS_LIMIT_MAX,
            "default": EVENTS_LIMIT_DEFAULT,
        },
    },
)
_LAST_EVENT_ID = {
    "name": "Last-Event-ID",
    "in": "header",
    "description": "With `Accept: text/event-stream`: send only the events after this "
    "event id (what `EventSource` sends when it reconnects).",
    "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
}

_EVENT_STREAM = {
    "text/event-stream": {
        "schema": {
            "type": "string",
            "description": "With `Accept: text/event-stream`, Server-Sent Events: past "
            "events first, then new ones as they happen. Each message has `id:` (the "
            "event id), `event:` (its type) and `data:` (the event as in the JSON list); "
            "a `: keep-alive` comment follows 15 s without an event. The stream ends "
            "once the workflow is finished and nothing more is owed for it.",
        },
    }
}
_LOCATION = {
    "Location": {"description": "`/v1/workflows/{id}`", "schema": {"type": "string"}},
}

_WORKFLOW_ID = "$response.body#/id"
_FIRST_STEP_ID = "$response.body#/steps/0/id"
#: Where a status document leads: the operations on the workflow and its first step.
_WORKFLOW_LINKS = {
    name: {"operationId": operation_id, "parameters": parameters}
    for name, operation_id, parameters in [
        ("GetWorkflow", "getWorkflow", {"workflowId": _WORKFLOW_ID}),
        ("ListEvents", "listEvents", {"workflowId": _WORKFLOW_ID}),
        ("CancelWorkflow", "cancelWorkflow", {"workflowId": _WORKFLOW_ID}),
        ("RetryWorkflow", "retryWorkflow", {"workflowId": _WORKFLOW_ID}),
        ("GetStep", "getStep", {"workflowId": _WORKFLOW_ID, "stepId": _FIRST_STEP_ID}),
        (
            "GetStepDependencies",
            "getStepDependencies",
            {"workflowId": _WORKFLOW_ID, "stepId": _FIRST_STEP_ID},
        ),
        ("RetryStep", "retryStep", {"workflowId": _WORKFLOW_ID, "stepId": _FIRST_STEP_ID}),
    ]
}

# ------------------------------------------------------------------- operations

_NOT_JSON = "The body is not JSON (or, with `Content-Encoding: gzip`, not gzip)."
_ENCODING = "A `Content-Encoding` other than `gzip` or `identity`."
_GZIP = " A body may be sent with `Content-Encoding: gzip`; its limit applies to the decoded bytes."
_NO_WORKFLOW = "No such workflow."
_NO_STEP = "No such workflow, or no such step in it."

#: Route name -> its description.
OPERATIONS: dict[str, Operation] = {
    "healthz": Operation(
        "getHealth",
        "Liveness: the process answers",
        "operations",
        {200: "The process answers."},
        model=Health,
        auth=False,
    ),
    "readyz": Operation(
        "getReadiness",
        "Readiness: the process can reach its database",
        "operations",
        {200: "The database answers.", 503: "The database does not answer."},
        model=Readiness,
        auth=False,
    ),
    "prometheus": Operation(
        "getMetrics",
        "Prometheus metrics",
        "operations",
        {200: "Prometheus text format."},
        problems={404: "The server has not finished starting."},
        auth=False,
        alternatives={"text/plain": {"schema": {"type": "string"}}},
    ),
    "openapi": Operation(
        "getOpenApi",
        "This document",
        "documentation",
        {200: "The OpenAPI 3.1 document of the API."},
        auth=False,
        alternatives={"application/json": {"schema": {"type": "object"}}},
    ),
    "create_workflow": Operation(
        "createWorkflow",
        "Create a workflow",
        "workflows",
        {
            201: "Created; the workflow is already running.",
            200: "An identical create was repeated (same `id` or `Idempotency-Key`).",
        },
        problems={
            400: _NOT_JSON,
            409: "The `id` or `Idempotency-Key` exists with a different body.",
            413: "The body is over 1 MiB.",
            415: _ENCODING,
            422: "The body breaks a rule (a key repeated in an object included), or the "
            "`Idempotency-Key` is not 1 to 255 characters without control characters.",
        },
        model=WorkflowDocument,
        description="The body is a JSON object of at most 1 MiB." + _GZIP,
        body=WorkflowCreate,
        body_example=CREATE_EXAMPLE,
        parameters=(_IDEMPOTENCY_KEY,),
        headers=_LOCATION,
    ),
    "list_workflows": Operation(
        "listWorkflows",
        "List workflows, newest first",
        "workflows",
        {200: "A page of workflow summaries."},
        problems={422: "A query parameter is not valid (each is listed)."},
        model=WorkflowPage,
        parameters=_LIST_PARAMETERS,
    ),
    "get_workflow": Operation(
        "getWorkflow",
        "Read a workflow",
        "workflows",
        {200: "The workflow's status document."},
        problems={404: _NO_WORKFLOW},
        model=WorkflowDocument,
    ),
    "events": Operation(
        "listEvents",
        "A workflow's events, as JSON or as a live stream",
        "workflows",
        {200: "A page of the workflow's events, oldest first."},
        problems={
            400: "A `Last-Event-ID` that is empty or not an event id.",
            404: _NO_WORKFLOW,
            422: "`after` or `limit` is not valid (each is listed).",
        },
        model=EventList,
        description="Pages of at most `limit` events after the event id `after`; "
        "`nextAfter` is where the next page starts, null once no more remain. With "
        "`Accept: text/event-stream` the answer is a live Server-Sent Events stream of "
        "every event (from `Last-Event-ID` when given) instead.",
        parameters=(*_EVENT_PARAMETERS, _LAST_EVENT_ID),
        alternatives=_EVENT_STREAM,
    ),
    "get_step": Operation(
        "getStep",
        "Read a step and its attempt log",
        "steps",
        {200: "The step document plus `attemptLog`."},
        problems={404: _NO_STEP},
        model=StepDetail,
    ),
    "get_dependencies": Operation(
        "getStepDependencies",
        "A step's neighbours in the DAG",
        "steps",
        {200: "The step's direct dependencies and direct dependents."},
        problems={404: _NO_STEP},
        model=Dependencies,
    ),
    "cancel": Operation(
        "cancelWorkflow",
        "Cancel a workflow",
        "actions",
        {200: "The status document after the cancel (`cancelled`, or `compensating`)."},
        problems={
            400: _NOT_JSON,
            404: _NO_WORKFLOW,
            409: "The workflow is not `pending` or `running`.",
            413: "The body is over 64 KiB.",
            415: _ENCODING,
            422: "The body is not a valid options object.",
        },
        model=WorkflowDocument,
        description="The body is optional: an empty one means the defaults." + _GZIP,
        body=CancelRequest,
        body_required=False,
        body_example={"compensate": True},
    ),
    "retry": Operation(
        "retryWorkflow",
        "Retry a failed workflow or a failed compensation",
        "actions",
        {200: "The status document after the retry."},
        problems={
            404: _NO_WORKFLOW,
            409: "The workflow is neither `failed` nor `compensation_failed`.",
        },
        model=WorkflowDocument,
    ),
    "retry_step": Operation(
        "retryStep",
        "Re-run one step and every step downstream of it",
        "actions",
        {200: "The status document after the retry."},
        problems={
            404: _NO_STEP,
            409: "The step or one downstream of it is running or retrying, or the "
            "workflow is compensating or compensated.",
        },
        model=WorkflowDocument,
    ),
    "callback": Operation(
        "completeAsyncStep",
        "Finish an async step",
        "callbacks",
        {200: "The callback was recorded."},
        problems={
            400: _NOT_JSON,
            403: "The token was not made by this server.",
            404: "The token names a step that does not exist.",
            410: "The step is no longer waiting for this callback.",
            413: "The body is over 1 MiB.",
            415: _ENCODING,
            422: "The body is not an object with a boolean `success` and only the "
            "fields `success`, `result`, `error` and `retry`.",
        },
        model=CallbackAnswer,
        body_example={"success": True, "result": {"pages": 12}},
        description="The URL is the `callbackUrl` of the step request; the token in it "
        "is the credential, so no API key is needed." + _GZIP,
        auth=False,
        body=CallbackRequest,
    ),
    "heartbeat": Operation(
        "heartbeatAsyncStep",
        "Extend an async step's deadline by its timeout",
        "callbacks",
        {200: "The deadline was moved."},
        problems={
            403: "The token was not made by this server.",
            404: "The token names a step that does not exist.",
            409: "The step's request is still in flight (heartbeat after answering it).",
            410: "The step is no longer waiting for this callback.",
        },
        model=HeartbeatAnswer,
        auth=False,
    ),
}

SCHEDULE_EXAMPLE: dict[str, Any] = {
    "cron": "0 3 * * *",
    "timezone": "Europe/Paris",
    "overlap": "skip",
    "catchupWindow": 600,
    "jitter": 30,
    "workflow": {
        "name": "nightly-report",
        "steps": [{"id": "report", "url": "https://shop.example/jobs/report"}],
    },
}
_NO_SCHEDULE = "No such schedule."
_SCHEDULE_PAGE_PARAMETERS = (
    {
        "name": "limit",
        "in": "query",
        "description": "Page size.",
        "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
    },
    {
        "name": "cursor",
        "in": "query",
        "description": "The `nextCursor` of the previous page.",
        "schema": {"type": "string"},
    },
)

#: Batch create, the graph, and schedules (DESIGN §3, §8).
OPERATIONS.update(
    {
        "create_workflows": Operation(
            "createWorkflows",
            "Create many workflows in one transaction",
            "workflows",
            {
                201: "Created (items in request order); nothing was stored if any item "
                "was refused.",
                200: "Every item existed already with the same body (same `id`).",
            },
            problems={
                400: _NOT_JSON,
                409: "An item's `id` exists with a different body (`errors` names it, "
                "`workflows[2].id`); nothing was stored.",
                413: f"The body is over {MAX_BATCH_BODY_BYTES // (1024 * 1024)} MiB.",
                415: _ENCODING,
                422: "An item breaks a rule (`errors` names it, `workflows[2].steps[0].id`), "
                f"or there are more than {MAX_BATCH_WORKFLOWS} workflows or "
                f"{MAX_BATCH_STEPS} steps in all; nothing was stored.",
            },
            model=WorkflowBatch,
            description="Each item is a create body (at most 1 MiB of JSON each). An item "
            "whose `id` exists with the same body answers that workflow as it is." + _GZIP,
            body=BatchCreate,
            body_example={"workflows": [CREATE_EXAMPLE]},
        ),
        "get_graph": Operation(
            "getWorkflowGraph",
            "A workflow's whole DAG: steps, compensations and callbacks",
            "workflows",
            {200: "Every node with its status, and every edge."},
            problems={404: _NO_WORKFLOW},
            model=GraphDocument,
        ),
        "put_schedule": Operation(
            "putSchedule",
            "Create or replace a schedule",
            "schedules",
            {201: "Created.", 200: "Replaced (fire count and recent runs kept)."},
            problems={
                400: _NOT_JSON,
                413: "The body is over 1 MiB.",
                415: _ENCODING,
                422: "The body breaks a rule (an invalid cron expression or time zone, a "
                "`workflow` that is not a valid create: `workflow.steps[0].url`), or the id "
                "is not 1 to 110 characters of a workflow id.",
            },
            model=ScheduleDocument,
            body=ScheduleSpec,
            body_example=SCHEDULE_EXAMPLE,
            headers={
                "Location": {"description": "`/v1/schedules/{id}`", "schema": {"type": "string"}}
            },
            description="Exactly one of `cron` and `every`. Each fire creates the workflow "
            "`{scheduleId}-{YYYYMMDDTHHMMSSZ}` (the tick, in UTC): a tick fires once, "
            "however many servers run." + _GZIP,
        ),
        "list_schedules": Operation(
            "listSchedules",
            "List schedules, by id",
            "schedules",
            {200: "A page of schedules."},
            problems={422: "A query parameter is not valid (each is listed)."},
            model=SchedulePage,
            parameters=_SCHEDULE_PAGE_PARAMETERS,
        ),
        "get_schedule": Operation(
            "getSchedule",
            "Read a schedule, its next run and its recent runs",
            "schedules",
            {200: "The schedule document."},
            problems={404: _NO_SCHEDULE},
            model=ScheduleDocument,
        ),
        "delete_schedule": Operation(
            "deleteSchedule",
            "Delete a schedule (its workflows stay)",
            "schedules",
            {204: "Deleted."},
            problems={404: _NO_SCHEDULE},
        ),
        "pause_schedule": Operation(
            "pauseSchedule",
            "Pause a schedule",
            "schedules",
            {200: "The schedule, paused (no tick is due; none is caught up on resume)."},
            problems={
                400: _NOT_JSON,
                404: _NO_SCHEDULE,
                413: "The body is over 64 KiB.",
                415: _ENCODING,
                422: 'The body is not a valid `{"note"}` object.',
            },
            model=ScheduleDocument,
            body=NoteRequest,
            body_required=False,
            body_example={"note": "maintenance until Monday"},
        ),
        "resume_schedule": Operation(
            "resumeSchedule",
            "Resume a schedule",
            "schedules",
            {200: "The schedule, firing again from its first tick after now."},
            problems={
                400: _NOT_JSON,
                404: _NO_SCHEDULE,
                413: "The body is over 64 KiB.",
                415: _ENCODING,
                422: 'The body is not a valid `{"note"}` object.',
            },
            model=ScheduleDocument,
            body=NoteRequest,
            body_required=False,
        ),
        "trigger_schedule": Operation(
            "triggerSchedule",
            "Fire a schedule now, once",
            "schedules",
            {
                201: "Fired: the new workflow's status document.",
                200: "The schedule fired this second already: that workflow.",
            },
            problems={
                404: _NO_SCHEDULE,
                409: "The schedule has fired its `limit`, or this second's tick was "
                "recorded as skipped or missed (trigger again).",
            },
            model=WorkflowDocument,
            description="Fires whether the schedule is paused or not and whatever its "
            "overlap policy; the tick is the current second.",
            headers=_LOCATION,
        ),
    }
)

_TAGS = [
    {"name": "workflows", "description": "Create, list and read workflows."},
    {"name": "steps", "description": "Read steps."},
    {"name": "actions", "description": "Cancel and retry."},
    {"name": "schedules", "description": "Recurring workflows."},
    {"name": "callbacks", "description": "Finish async steps (no API key: the token)."},
    {"name": "operations", "description": "Health checks and metrics (no API key)."},
    {"name": "documentation", "description": "This document (no API key)."},
]


# ----------------------------------------------------------------------- building


def build_document(routes: Sequence[BaseRoute]) -> dict[str, Any]:
    """The OpenAPI document of ``routes``; raises ``LookupError`` for an undocumented one.

    Routes with ``include_in_schema=False`` and mounts (the docs page and its files)
    are left out.
    """
    described = [
        (route, method, _operation(route))
        for route in routes
        if isinstance(route, Route) and route.include_in_schema
        for method in sorted(route.methods or ())
        if method != "HEAD"
    ]
    schemas = _schemas([op for _, _, op in described])
    paths: dict[str, dict[str, Any]] = {}
    for route, method, op in described:
        path, parameters = _path(route.path)
        paths.setdefault(path, {})[method.lower()] = _render(op, parameters, schemas)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Baton",
            "version": __version__,
            "summary": "Webhook-driven workflow orchestration.",
            "description": "Create a workflow (a DAG of steps, each a URL in your own app) "
            "and Baton calls each step with a signed POST once its dependencies are done. "
            "Every `/v1` route but the callbacks needs `Authorization: Bearer <key>`. "
            "Errors are RFC 9457 problem documents (`application/problem+json`).",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "tags": _TAGS,
        "paths": paths,
        "components": {
            "schemas": schemas.definitions,
            "securitySchemes": {
                BEARER: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key (`BATON_API_KEYS`, or `data/api-key`).",
                }
            },
        },
    }


def _operation(route: Route) -> Operation:
    try:
        return OPERATIONS[route.name]
    except KeyError:
        raise LookupError(
            f"route {route.path} ({route.name}) has no OpenAPI description in app.openapi"
        ) from None


_PARAMETER = re.compile(r"{([^}:]+)(?::[^}]+)?}")


def _path(route_path: str) -> tuple[str, list[dict[str, Any]]]:
    """``/v1/workflows/{workflow_id}`` -> ``/v1/workflows/{workflowId}`` and its parameters."""
    parameters = [
        {"name": to_camel(name), "in": "path", "required": True, **_PATH_PARAMETERS[name]}
        for name in _PARAMETER.findall(route_path)
    ]
    return _PARAMETER.sub(lambda m: "{" + to_camel(m.group(1)) + "}", route_path), parameters


@dataclass(frozen=True)
class _Schemas:
    refs: Mapping[tuple[Any, JsonSchemaMode], dict[str, Any]]
    #: Every model's schema, by name, for ``#/components/schemas``.
    definitions: dict[str, Any]

    def ref(self, model: type[BaseModel], mode: JsonSchemaMode) -> dict[str, Any]:
        return self.refs[(model, mode)]


def _schemas(operations: Sequence[Operation]) -> _Schemas:
    """JSON Schemas of every model, sharing definitions under ``#/components/schemas``."""
    wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = [(Problem, "serialization")]
    for op in operations:
        if op.model is not None:
            wanted.append((op.model, "serialization"))
        if op.body is not None:
            wanted.append((op.body, "validation"))
    refs, top = models_json_schema(
        list(dict.fromkeys(wanted)), ref_template="#/components/schemas/{model}"
    )
    return _Schemas(refs, top.get("$defs", {}))


def _render(
    op: Operation, path_parameters: list[dict[str, Any]], schemas: _Schemas
) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, description in op.answers.items():
        content: dict[str, Any] = {}
        if op.model is not None:
            content["application/json"] = {"schema": schemas.ref(op.model, "serialization")}
        if status == 200:
            content.update(op.alternatives)
        answer: dict[str, Any] = {"description": description, "content": content}
        if op.headers:
            answer["headers"] = op.headers
        if op.model is WorkflowDocument:
            answer["links"] = _WORKFLOW_LINKS
        responses[str(status)] = answer
    problems = dict(op.problems)
    if op.auth:
        problems[401] = "No valid API key."
    problem = {PROBLEM_CONTENT_TYPE: {"schema": schemas.ref(Problem, "serialization")}}
    for status, description in sorted(problems.items()):
        responses[str(status)] = {"description": description, "content": problem}
    rendered: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "tags": [op.tag],
        "security": [{BEARER: []}] if op.auth else [],
        "responses": dict(sorted(responses.items())),
    }
    if op.description:
        rendered["description"] = op.description
    parameters = [*path_parameters, *op.parameters]
    if parameters:
        rendered["parameters"] = parameters
    if op.body is not None:
        media: dict[str, Any] = {"schema": schemas.ref(op.body, "validation")}
        if op.body_example is not None:
            media["example"] = op.body_example
        rendered["requestBody"] = {
            "required": op.body_required,
            "content": {"application/json": media},
        }
    return rendered


# --------------------------------------------------------------------------- /docs


def docs_assets() -> StaticFiles:
    """Swagger UI's JavaScript and CSS, from the installed ``swagger-ui-py`` package."""
    return StaticFiles(packages=[("swagger_ui", "static")])


#: Swagger UI pointed at ``/openapi.json``. ``validatorUrl: null`` turns off its default
#: of sending the document to an online validator. Its URLs are relative to ``/docs`` so
#: that the page also works behind a proxy that serves Baton under a path prefix.
DOCS_PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Baton API</title>
<link rel="icon" type="image/png" href="{DOCS_ASSETS_PATH[1:]}/favicon-32x32.png">
<link rel="stylesheet" href="{DOCS_ASSETS_PATH[1:]}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{DOCS_ASSETS_PATH[1:]}/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({{
  url: "openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
}});
</script>
</body>
</html>
"""

#: Keeps the page to this server's own files, whatever a script might try to load.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'"
)
