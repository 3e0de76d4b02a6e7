"""Typed results: the JSON documents the API answers, as dicts that read like objects.

Every document is a ``dict`` subclass holding exactly the JSON the server sent, unknown
fields included (a newer server's fields are never lost), so ``doc["completedSteps"]``,
``json.dumps(doc)`` and ``doc == {...}`` work as for any dict. Its fields also read as
attributes in snake_case (``doc.completed_steps``), typed for mypy and editors; a field
the document does not have raises ``AttributeError`` (use ``doc.get(...)`` for optional
ones). Nested documents are typed too (``workflow.steps[0].error.http_status``).
Documents are read-only through attributes; they are still dicts, so code may build
or change them as dicts.

Times stay ISO 8601 strings, as sent; :func:`parse_time` turns one into a ``datetime``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Generic, TypeVar

__all__ = [
    "TERMINAL_STATUSES",
    "Attempt",
    "CallbackAnswer",
    "Dependencies",
    "Document",
    "Event",
    "FlowControl",
    "Graph",
    "GraphEdge",
    "GraphNode",
    "HeartbeatAnswer",
    "Job",
    "JobAttempt",
    "JobStatus",
    "JobWorkflow",
    "Page",
    "Queue",
    "Schedule",
    "ScheduleRun",
    "Step",
    "StepDetail",
    "StepError",
    "StepStatus",
    "Workflow",
    "WorkflowError",
    "WorkflowStatus",
    "WorkflowSummary",
    "parse_time",
]

D = TypeVar("D", bound="Document")
T = TypeVar("T")

_SNAKE_PART = re.compile(r"_([a-z0-9])")


def camel(name: str) -> str:
    """``completed_steps`` → ``completedSteps``; a trailing ``_`` is dropped (``from_``)."""
    return _SNAKE_PART.sub(lambda match: match.group(1).upper(), name.rstrip("_"))


class Document(dict[str, Any]):
    """A JSON object from the API; subclasses name its fields for type checkers."""

    __slots__ = ()
    #: Fields holding a nested document (or a list of them), and its class.
    nested: ClassVar[Mapping[str, type[Document]]] = {}

    @classmethod
    def wrap(cls: type[D], data: Mapping[str, Any]) -> D:
        """Build one from parsed JSON, typing the nested documents it names."""
        document = cls(data)
        for name, kind in cls.nested.items():
            value = document.get(name)
            if isinstance(value, Mapping):
                document[name] = kind.wrap(value)
            elif isinstance(value, list):
                document[name] = [
                    kind.wrap(item) if isinstance(item, Mapping) else item for item in value
                ]
        return document

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        key = camel(name)
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no field {key!r}") from None


@dataclass
class Page(Generic[T]):
    """One page of a list: its ``items`` and the cursor of the next page (None: last)."""

    items: list[T]
    next_cursor: str | None = None
    #: The whole answer, unknown fields included.
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


class WorkflowStatus(StrEnum):
    #: Waiting for its ``startAt`` / ``delay``; no step sent yet.
    PENDING = "pending"
    #: Steps are being run.
    RUNNING = "running"
    #: Every step completed or was skipped.
    COMPLETED = "completed"
    #: A step failed for good (or the workflow timed out), without a saga.
    FAILED = "failed"
    #: Cancelled through the API.
    CANCELLED = "cancelled"
    #: A saga is undoing completed steps.
    COMPENSATING = "compensating"
    #: Every compensation succeeded.
    COMPENSATED = "compensated"
    #: A compensation failed for good; the rest wait for a retry.
    COMPENSATION_FAILED = "compensation_failed"


#: Workflow statuses nothing happens after without an explicit action.
TERMINAL_STATUSES = frozenset(
    {
        WorkflowStatus.COMPLETED,
        WorkflowStatus.FAILED,
        WorkflowStatus.CANCELLED,
        WorkflowStatus.COMPENSATED,
        WorkflowStatus.COMPENSATION_FAILED,
    }
)


class StepStatus(StrEnum):
    #: Waiting for its dependencies.
    PENDING = "pending"
    #: A request is in flight, or an async step awaits its callback.
    RUNNING = "running"
    #: Waiting for its next attempt.
    RETRYING = "retrying"
    #: Done; its result is stored.
    COMPLETED = "completed"
    #: Failed for good.
    FAILED = "failed"
    #: Its ``when`` was false.
    SKIPPED = "skipped"
    #: It will not run.
    CANCELLED = "cancelled"


class JobStatus(StrEnum):
    #: Waiting for its ``scheduledFor`` time or a worker.
    PENDING = "pending"
    #: Leased by a worker until ``leaseExpiresAt``.
    CLAIMED = "claimed"
    #: Done; its result is stored.
    COMPLETED = "completed"
    #: The last attempt failed; claimable again at ``nextAttemptAt``.
    FAILED = "failed"
    #: Failed for good: in the dead-letter queue.
    DLQ = "dlq"
    #: Cancelled through the API.
    CANCELLED = "cancelled"


class WorkflowError(Document):
    """Why a workflow did not complete."""

    __slots__ = ()
    code: str
    message: str
    step_id: str | None


class StepError(Document):
    """The last attempt's error of a step (or one attempt's, in an attempt log)."""

    __slots__ = ()
    code: str
    message: str
    http_status: int | None


class Step(Document):
    """A step of a workflow's status document."""

    __slots__ = ()
    nested = {"error": StepError}
    id: str
    url: str | None
    queue: str | None
    job_id: str | None
    depends_on: list[str]
    status: str
    attempts: int
    max_attempts: int
    started_at: str | None
    completed_at: str | None
    result: Any
    error: StepError | None
    compensation: str | None
    compensation_status: str | None
    when: str | None
    continue_on_failure: bool
    timeout: float
    retries: dict[str, Any]


class Attempt(Document):
    """One delivery attempt of a step or of its compensation."""

    __slots__ = ()
    nested = {"error": StepError}
    kind: str
    number: int
    webhook_id: str
    started_at: str
    duration_ms: float
    http_status: int | None
    outcome: str
    error: StepError | None
    response_excerpt: str | None


class StepDetail(Step):
    """A step with every attempt (``GET /v1/workflows/{id}/steps/{stepId}``)."""

    __slots__ = ()
    nested = {"error": StepError, "attemptLog": Attempt}
    attempt_log: list[Attempt]


class Workflow(Document):
    """A workflow's status document."""

    __slots__ = ()
    nested = {"steps": Step, "error": WorkflowError}
    id: str
    workflow_id: str
    name: str | None
    status: str
    context: dict[str, Any]
    saga: bool
    fail_fast: bool
    timeout: float
    on_complete: str | None
    on_error: str | None
    created_at: str
    started_at: str | None
    completed_at: str | None
    current_steps: list[str]
    completed_steps: list[str]
    failed_steps: list[str]
    skipped_steps: list[str]
    results: dict[str, Any]
    error: WorkflowError | None
    steps: list[Step]
    schedule_id: str | None
    scheduled_at: str | None

    @property
    def finished(self) -> bool:
        """Whether the status is final (nothing happens without a retry)."""
        return self.get("status") in TERMINAL_STATUSES

    def step(self, step_id: str) -> Step:
        """The step ``step_id``.

        Raises:
            KeyError: the workflow has no such step.
        """
        for step in self.get("steps") or ():
            if step.get("id") == step_id:
                return step
        raise KeyError(step_id)


class WorkflowSummary(Document):
    """A workflow in a list."""

    __slots__ = ()
    nested = {"error": WorkflowError}
    id: str
    name: str | None
    status: str
    created_at: str
    started_at: str | None
    completed_at: str | None
    step_count: int
    error: WorkflowError | None


class Dependencies(Document):
    """A step's neighbours in the DAG."""

    __slots__ = ()
    depends_on: list[str]
    depended_on_by: list[str]


class GraphNode(Document):
    """A node of a workflow's graph: a step, a compensation or a callback."""

    __slots__ = ()
    id: str
    status: str | None
    kind: str
    attempts: int
    queue: str | None
    job_id: str | None


class GraphEdge(Document):
    """An edge of a workflow's graph (``edge.from_``, ``edge.to``)."""

    __slots__ = ()
    from_: str
    to: str


class Graph(Document):
    """A workflow's whole DAG in one document."""

    __slots__ = ()
    nested = {"nodes": GraphNode, "edges": GraphEdge}
    nodes: list[GraphNode]
    edges: list[GraphEdge]


class Event(Document):
    """A lifecycle event of a workflow."""

    __slots__ = ()
    id: int
    type: str
    workflow_id: str
    step_id: str | None
    at: str
    data: dict[str, Any]


class JobWorkflow(Document):
    """The ``workflow`` of a job made by a workflow's queue step."""

    __slots__ = ()
    workflow_id: str
    workflow_name: str | None
    step_id: str
    kind: str
    context: dict[str, Any]
    previous_steps: dict[str, Any]
    compensating: dict[str, Any] | None
    schedule: dict[str, Any] | None


class JobAttempt(Document):
    """One attempt of a job."""

    __slots__ = ()
    number: int
    worker_id: str | None
    claimed_at: str
    finished_at: str | None
    outcome: str | None
    error: Any


class Job(Document):
    """A job document."""

    __slots__ = ()
    nested = {"workflow": JobWorkflow, "attemptLog": JobAttempt}
    id: str
    queue: str
    status: str
    payload: dict[str, Any]
    result: Any
    priority: int
    attempts: int
    attempt: int
    max_retries: int
    idempotency_key: str | None
    scheduled_for: str | None
    next_attempt_at: str | None
    created_at: str
    claimed_at: str | None
    completed_at: str | None
    lease_id: str | None
    lease_expires_at: str | None
    visibility_timeout: float
    worker_id: str | None
    last_error: Any
    flow_control: dict[str, Any] | None
    workflow: JobWorkflow | None
    attempt_log: list[JobAttempt]


class Queue(Document):
    """A queue: whether it is paused, and its jobs counted by status."""

    __slots__ = ()
    name: str
    paused: bool
    counts: dict[str, int]
    oldest_pending_at: str | None


class ScheduleRun(Document):
    """One of a schedule's recent fires."""

    __slots__ = ()
    scheduled_at: str
    fired_at: str | None
    workflow_id: str | None
    outcome: str


class Schedule(Document):
    """A schedule (recurring workflow)."""

    __slots__ = ()
    nested = {"recentRuns": ScheduleRun}
    id: str
    cron: str | None
    every: float | None
    timezone: str
    start_at: str | None
    end_at: str | None
    limit: int | None
    overlap: str
    catchup_window: float
    jitter: float
    paused: bool
    workflow: dict[str, Any]
    next_run_at: str | None
    last_run_at: str | None
    fired_count: int
    recent_runs: list[ScheduleRun]


class FlowControl(Document):
    """A flow-control key: its limits and what is in flight or waiting under it."""

    __slots__ = ()
    key: str
    parallelism: int | None
    rate: int | None
    period: float | None
    in_flight: int
    waiting: int
    held_until: str | None


class CallbackAnswer(Document):
    """What became of an async step after its callback."""

    __slots__ = ()
    accepted: bool
    step_id: str
    status: str


class HeartbeatAnswer(Document):
    """An async step's new deadline after a heartbeat."""

    __slots__ = ()
    step_id: str
    deadline: str


def parse_time(value: str | None) -> datetime | None:
    """An ISO 8601 time from a document as an aware ``datetime`` (None stays None)."""
    if value is None:
        return None
    return datetime.fromisoformat(value)
