"""The documents the HTTP API answers with, as pydantic models.

The store builds its answers as plain dicts (``_status_document`` and friends in
``app.store``), which is fast; these models describe the same documents for the
OpenAPI document (``app.openapi``) and for the tests that hold every answer to
them. They are strict and refuse unknown fields, so an answer that gains, loses
or retypes a field fails those tests until the model says the same.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from app.engine import (
    StepErrorCode,
    StepStatus,
    WorkflowErrorCode,
    WorkflowStatus,
)
from app.machine import CompensationStatus
from app.schemas import ID_PATTERN, MAX_NAME_LENGTH, RetryPolicy

__all__ = [
    "AttemptDocument",
    "CallbackAnswer",
    "Dependencies",
    "EventDocument",
    "EventList",
    "GraphDocument",
    "GraphEdge",
    "GraphNode",
    "Health",
    "HeartbeatAnswer",
    "Problem",
    "ProblemFieldError",
    "Readiness",
    "RetryPolicyDocument",
    "ScheduleDocument",
    "SchedulePage",
    "ScheduleRunDocument",
    "StepDetail",
    "StepDocument",
    "StepErrorDocument",
    "WorkflowBatch",
    "WorkflowDocument",
    "WorkflowErrorDocument",
    "WorkflowPage",
    "WorkflowSummary",
]

_CONFIG = ConfigDict(
    alias_generator=to_camel,
    populate_by_name=True,
    extra="forbid",
    strict=True,
    # Every field is always present in an answer, nullable ones as null.
    json_schema_serialization_defaults_required=True,
)

Id = Annotated[str, Field(pattern=ID_PATTERN)]
#: ISO 8601 in UTC with milliseconds and a ``Z``.
Time = datetime
#: Any JSON value.
Json = Any

#: Every event type (DESIGN §6).
EventType = Literal[
    "workflow.created",
    "workflow.started",
    "step.started",
    "step.completed",
    "step.failed",
    "step.retrying",
    "step.skipped",
    "step.cancelled",
    "workflow.completed",
    "workflow.failed",
    "workflow.cancelled",
    "workflow.compensating",
    "compensation.completed",
    "compensation.failed",
    "workflow.compensated",
    "workflow.compensation_failed",
    "callback.delivered",
    "callback.failed",
]
#: A request's outcome, or for an async step's callback ``callback.`` and the callback's.
AttemptOutcome = Literal["completed", "failed", "async", "callback.completed", "callback.failed"]


class ProblemFieldError(BaseModel):
    """One problem with the request, and where it is."""

    model_config = _CONFIG

    path: str = Field(
        description='`steps[1].retries.maxAttempts`, `context["order id"]`, a query '
        'parameter or header name, or `""` for the whole body.'
    )
    message: str


class Problem(BaseModel):
    """An error (RFC 9457 problem document), answered as ``application/problem+json``."""

    model_config = _CONFIG

    type: str = Field(
        description="A URI naming the kind of problem: "
        "`https://baton.dev/problems/<kind>`, or `about:blank`."
    )
    title: str = Field(description="The HTTP status text.")
    status: int = Field(ge=400, le=599, description="The HTTP status code.")
    detail: str = Field(description="One sentence about this occurrence.")
    errors: list[ProblemFieldError] = Field(
        description="One entry per problem found (422 answers); empty otherwise."
    )


class WorkflowErrorDocument(BaseModel):
    """Why a workflow did not complete."""

    model_config = _CONFIG

    code: WorkflowErrorCode
    message: str
    step_id: str | None = Field(description="The step that failed for `step_failed`, else null.")


class StepErrorDocument(BaseModel):
    """Why a step's last attempt failed, or why the step will not run."""

    model_config = _CONFIG

    code: StepErrorCode
    message: str
    http_status: int | None = Field(description="The status of the handler's answer, if any.")


class RetryPolicyDocument(RetryPolicy):
    """A step's retry policy with every default filled in."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)


class StepDocument(BaseModel):
    """One step of a workflow, as it stands."""

    model_config = _CONFIG

    id: Id
    url: str
    depends_on: list[str]
    status: StepStatus
    attempts: int = Field(
        ge=0, description="Attempts started in the current run (0 until the first is sent)."
    )
    max_attempts: int = Field(ge=1)
    started_at: Time | None
    completed_at: Time | None
    result: Json = Field(description="The stored result of a completed step, else null.")
    error: StepErrorDocument | None
    compensation: str | None
    compensation_status: CompensationStatus | None = Field(
        description="Null until the step's compensation is planned."
    )
    when: str | None
    continue_on_failure: bool = Field(description='Whether `onFailure` is `"ignore"`.')
    on_failure: Literal["fail", "ignore", "remove", "continue"] = Field(
        description="What the step failing for good does to the steps that depend on it."
    )
    timeout: float
    retries: RetryPolicyDocument


class AttemptDocument(BaseModel):
    """One delivery attempt of a step or of its compensation."""

    model_config = _CONFIG

    kind: Literal["step", "compensation"]
    number: int = Field(ge=1, description="The attempt number (`Baton-Attempt`).")
    webhook_id: str = Field(description="The `webhook-id` the request carried.")
    started_at: Time
    duration_ms: float = Field(ge=0)
    http_status: int | None
    outcome: AttemptOutcome
    error: StepErrorDocument | None
    response_excerpt: str | None = Field(
        description="The first 2,048 characters of the answer (or callback) body."
    )


class StepDetail(StepDocument):
    """A step plus every recorded attempt of it and of its compensation, oldest first."""

    attempt_log: list[AttemptDocument]


class WorkflowDocument(BaseModel):
    """A workflow's status document."""

    model_config = _CONFIG

    id: Id
    name: str | None = Field(max_length=MAX_NAME_LENGTH)
    status: WorkflowStatus
    context: dict[str, Json]
    saga: bool
    fail_fast: bool
    previous_steps: Literal["ancestors", "parents"] = Field(
        description="What step requests' `previousSteps` hold: every transitive ancestor, "
        "or only the step's direct dependencies."
    )
    timeout: float
    on_complete: str | None
    on_error: str | None
    created_at: Time
    start_at: Time | None = Field(
        description="The delayed start asked for (`startAt`, or the create time plus "
        "`delay`); null when the workflow started at once."
    )
    started_at: Time | None = Field(description="Null while `pending`.")
    completed_at: Time | None
    schedule_id: str | None = Field(description="The schedule that fired the workflow, if any.")
    scheduled_at: Time | None = Field(
        description="The schedule's tick the workflow was fired for, if any."
    )
    current_steps: list[str] = Field(description="Steps `running` or `retrying`.")
    completed_steps: list[str] = Field(description="Completed steps, in completion order.")
    failed_steps: list[str]
    skipped_steps: list[str]
    results: dict[str, Json] = Field(description="`{stepId: result}` of every completed step.")
    error: WorkflowErrorDocument | None
    steps: list[StepDocument] = Field(description="Every step, in declaration order.")


class WorkflowSummary(BaseModel):
    """A workflow in a list: read the workflow itself for its steps."""

    model_config = _CONFIG

    id: Id
    name: str | None = Field(max_length=MAX_NAME_LENGTH)
    status: WorkflowStatus
    created_at: Time
    started_at: Time | None
    completed_at: Time | None
    step_count: int = Field(ge=1)
    error: WorkflowErrorDocument | None


class WorkflowPage(BaseModel):
    """A page of workflows, newest first."""

    model_config = _CONFIG

    items: list[WorkflowSummary]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )


class Dependencies(BaseModel):
    """A step's direct neighbours in the DAG."""

    model_config = _CONFIG

    depends_on: list[str]
    depended_on_by: list[str]


class EventDocument(BaseModel):
    """One lifecycle event of a workflow."""

    model_config = _CONFIG

    id: int = Field(ge=1, description="Increases with every event the server records.")
    type: EventType
    workflow_id: Id
    step_id: str | None = Field(description="Null for workflow-level events.")
    at: Time
    data: dict[str, Json]


class EventList(BaseModel):
    """A page of a workflow's events, oldest first."""

    model_config = _CONFIG

    items: list[EventDocument]
    next_after: int | None = Field(
        description="Pass as `after` for the next page; null when no more events remain."
    )


class CallbackAnswer(BaseModel):
    """What became of an async step after its callback."""

    model_config = _CONFIG

    accepted: Literal[True]
    step_id: str
    status: StepStatus = Field(
        description="The step's status after the callback: `completed`, `retrying` or `failed`."
    )


class HeartbeatAnswer(BaseModel):
    """An async step's new deadline."""

    model_config = _CONFIG

    step_id: str
    deadline: Time


class Health(BaseModel):
    """The process answers."""

    model_config = _CONFIG

    status: Literal["ok"]


class Readiness(BaseModel):
    """Whether the process can reach its database."""

    model_config = _CONFIG

    status: Literal["ok", "unavailable"]
    database: Literal["ok", "unreachable"]


# --------------------------------------------------------------------------- §3, §8


class WorkflowBatch(BaseModel):
    """The workflows of a batch create, in request order."""

    model_config = _CONFIG

    items: list[WorkflowDocument]


#: A node of a workflow's graph: a step, a step's compensation, or a callback.
NodeKind = Literal["step", "compensation", "on_complete", "on_error"]


class GraphNode(BaseModel):
    """A node of a workflow's graph."""

    model_config = _CONFIG

    id: str = Field(
        description="A step's id; `<stepId>#compensation` for its compensation; "
        "`#on_complete` and `#on_error` for the callbacks (`#` is never in a step id)."
    )
    kind: NodeKind
    step_id: str | None = Field(description="The step a step or compensation node belongs to.")
    status: str | None = Field(
        description="A step's status; a compensation's `compensationStatus` (null until "
        "due); a callback's `pending`, `running`, `completed` or `failed` (null until owed)."
    )
    attempts: int = Field(ge=0, description="Requests sent for this node in its current run.")
    queue: str | None = Field(description="The queue of a queue step (null for URL steps).")
    job_id: str | None = Field(description="The job of a queue step's current run, if any.")


class GraphEdge(BaseModel):
    """An edge: ``from`` runs before ``to`` (a dependency, a compensation order, a callback)."""

    model_config = _CONFIG

    from_: str = Field(alias="from")
    to: str


class GraphDocument(BaseModel):
    """A workflow's whole DAG in one answer (BullMQ's ``getFlow``)."""

    model_config = _CONFIG

    nodes: list[GraphNode]
    edges: list[GraphEdge]


ScheduleOutcome = Literal["fired", "skipped", "missed", "buffered"]


class ScheduleRunDocument(BaseModel):
    """What one tick of a schedule came to."""

    model_config = _CONFIG

    scheduled_at: Time = Field(description="The tick: when the schedule said to fire.")
    fired_at: Time | None = Field(description="When its workflow was created, if it was.")
    workflow_id: str | None
    outcome: ScheduleOutcome


class ScheduleDocument(BaseModel):
    """A schedule (recurring workflow) and its state."""

    model_config = _CONFIG

    id: str
    cron: str | None = Field(description="Five cron fields, or an alias such as `@daily`.")
    every: int | None = Field(description="Seconds between ticks (when there is no `cron`).")
    timezone: str
    start_at: Time | None
    end_at: Time | None
    limit: int | None = Field(description="Fires in all, or null for no limit.")
    overlap: Literal["skip", "allow", "buffer_one", "cancel_previous"]
    catchup_window: float
    jitter: float
    paused: bool
    note: str | None = Field(description="Why it was paused (or resumed), if said.")
    workflow: dict[str, Json] = Field(description="The create body each fire uses.")
    created_at: Time
    updated_at: Time
    next_run_at: Time | None = Field(
        description="The next tick (without jitter); null while paused and once no tick "
        "is left (`endAt` passed, `limit` reached)."
    )
    last_run_at: Time | None = Field(description="When it last fired a workflow.")
    fired_count: int = Field(ge=0, description="Workflows fired, triggers included.")
    recent_runs: list[ScheduleRunDocument] = Field(
        description="The last 50 ticks (fired, skipped, missed or buffered), newest first."
    )


class SchedulePage(BaseModel):
    """A page of schedules, by id."""

    model_config = _CONFIG

    items: list[ScheduleDocument]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )
