"""Rows and the engine's values: reading one as the other, and the ids rows carry.

The state machine works on ``WorkflowState`` and ``StepState``; the database holds
rows (model instances, or plain records from ``sql.fetch``). This module converts
between them, names the columns the machine needs, and builds the
``OutboundRequest`` for a step's request and the attempt-log row of a report.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import orjson

from app.engine import (
    DeliveryKind,
    OnFailure,
    RetryPolicy,
    StepStatus,
    WorkflowErrorCode,
    WorkflowStatus,
    iso,
)
from app.machine import DeliveryView, StepState, WorkflowState
from app.models import Delivery, Step, Workflow
from app.store.work import OutboundRequest, Report
from app.tenants import public_id


def utcnow() -> datetime:
    return datetime.now(UTC)


def json_value(value: Any) -> Any:
    """A value for a JSON column: Tortoise takes a bare ``str`` as already-encoded JSON."""
    return orjson.dumps(value).decode() if isinstance(value, str) else value


def new_workflow_id() -> str:
    return f"wf_{uuid.uuid4().hex}"


def new_run_id() -> str:
    return uuid.uuid4().hex[:16]


def message_id(workflow_id: str, step_id: str | None, kind: DeliveryKind, run_id: str) -> str:
    """The webhook-id: one per step run (or callback), stable across automatic attempts."""
    digest = hashlib.sha256(f"{workflow_id}\0{step_id}\0{kind}\0{run_id}".encode()).hexdigest()
    return f"msg_{digest[:32]}"


#: A row read with ``sql.fetch`` or a model instance: read by attribute either way.
Row = Delivery | SimpleNamespace

#: Columns a machine needs of a step, a workflow, and a step's request row.
STEP_STATE_COLUMNS = (
    "workflow_id",
    "step_id",
    "status",
    "depends_on",
    "dependents",
    "deps_remaining",
    "url",
    "run_id",
    "retry",
    "timeout",
    "on_failure",
    "condition",
    "compensation",
    "attempts",
    "completion_seq",
    "compensation_status",
    "result",
    "error",
    "position",
)
WORKFLOW_STATE_COLUMNS = (
    "id",
    "name",
    "status",
    "context",
    "fail_fast",
    "saga",
    "failed_step",
    "open_steps",
    "step_count",
    "timeout",
    "end_reason",
    "on_complete",
    "on_error",
    "error",
    "compensation_started",
    "deadline_at",
    "completions",
    "previous_steps",
    "reopened",
    "schedule_id",
    "scheduled_at",
)
DELIVERY_VIEW_COLUMNS = ("workflow_id", "step_id", "kind", "attempt", "lease_owner", "awaiting")


def workflow_state(w: Workflow | SimpleNamespace) -> WorkflowState:
    return WorkflowState(
        id=w.id,
        name=w.name,
        status=WorkflowStatus(w.status),
        context=w.context,
        fail_fast=w.fail_fast,
        saga=w.saga,
        failed_step=w.failed_step,
        open_steps=w.open_steps,
        step_count=w.step_count,
        timeout=w.timeout,
        end_reason=WorkflowErrorCode(w.end_reason) if w.end_reason else None,
        on_complete=w.on_complete,
        on_error=w.on_error,
        error=w.error,
        compensation_started=w.compensation_started,
        completions=w.completions,
        previous_steps=w.previous_steps,
        reopened=w.reopened,
        schedule_id=w.schedule_id,
        scheduled_at=w.scheduled_at,
    )


def step_state(
    row: Step | SimpleNamespace, delivery: Delivery | SimpleNamespace | None
) -> StepState:
    view = None
    if delivery is not None:
        view = DeliveryView(
            kind=DeliveryKind(delivery.kind),
            attempt=delivery.attempt,
            in_flight=delivery.lease_owner is not None and not delivery.awaiting,
            awaiting=delivery.awaiting,
            lease_owner=delivery.lease_owner,
        )
    return StepState(
        step_id=row.step_id,
        status=StepStatus(row.status),
        depends_on=list(row.depends_on),
        dependents=list(row.dependents),
        deps_remaining=row.deps_remaining,
        url=row.url,
        run_id=row.run_id,
        policy=RetryPolicy.from_dict(row.retry),
        timeout=row.timeout,
        on_failure=OnFailure(row.on_failure),
        condition=row.condition,
        compensation=row.compensation,
        attempts=row.attempts,
        completion_seq=row.completion_seq,
        compensation_status=row.compensation_status,
        result=row.result,
        error=row.error,
        position=row.position,
        delivery=view,
    )


def step_request(
    delivery_id: int,
    workflow: Workflow | WorkflowState | SimpleNamespace,
    step: StepState,
    *,
    kind: DeliveryKind,
    attempt: int,
    message_id: str,
    url: str,
    previous: dict[str, Any],
    due_at: float,
    expired: bool = False,
    takeover: bool = False,
) -> OutboundRequest:
    """The request for a step's (or its compensation's) request: the one place that maps
    a step to what the dispatcher sends."""
    return OutboundRequest(
        delivery_id=delivery_id,
        workflow_id=workflow.id,
        workflow_name=workflow.name,
        kind=kind,
        step_id=step.step_id,
        attempt=attempt,
        message_id=message_id,
        url=url,
        timeout=step.timeout,
        policy=step.policy,
        run_id=step.run_id,
        context=workflow.context,
        previous_steps=previous,
        compensating=(
            {"stepId": step.step_id, "result": step.result}
            if kind is DeliveryKind.COMPENSATION
            else None
        ),
        expired=expired,
        takeover=takeover,
        due_at=due_at,
        workflow_timeout=workflow.timeout,
        schedule=schedule_reference(workflow.schedule_id, workflow.scheduled_at),
    )


def schedule_reference(schedule_id: str | None, scheduled_at: datetime | None) -> Any:
    """``{"id", "scheduledAt"}`` of the schedule that fired a workflow, or None."""
    if schedule_id is None:
        return None
    return {"id": public_id(schedule_id), "scheduledAt": iso(scheduled_at)}


def attempt_row(report: Report) -> dict[str, Any]:
    request = report.request
    result = report.result
    return {
        "workflow_id": request.workflow_id,
        "step_id": request.step_id,
        "kind": request.kind,
        "number": request.attempt,
        "message_id": request.message_id,
        "started_at": report.started_at,
        "duration_ms": round(report.duration_ms, 3),
        "http_status": result.http_status,
        "outcome": result.outcome,
        "error": result.error.to_dict() if result.error else None,
        "response_excerpt": result.excerpt,
    }
