"""Every API operation as a :class:`~baton._base.Call`: the one place that knows the paths.

The sync and async resources both send these, so a path, a body or an idempotency rule
is written once. Paths and bodies follow DESIGN §3 and §7–§9.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, TypeVar

from baton._base import Call, path, query
from baton.documents import (
    CallbackAnswer,
    Dependencies,
    Document,
    Event,
    FlowControl,
    Graph,
    HeartbeatAnswer,
    Job,
    Page,
    Queue,
    Schedule,
    StepDetail,
    Workflow,
    WorkflowSummary,
)

D = TypeVar("D", bound=Document)

IDEMPOTENCY_HEADER = "Idempotency-Key"


def page_of(kind: type[D], cursor_field: str = "nextCursor") -> Callable[[Any], Page[D]]:
    """A decoder of ``{"items": [...], cursor_field: …}`` answers."""

    def decode(data: Any) -> Page[D]:
        cursor = data.get(cursor_field)
        return Page(
            [kind.wrap(item) for item in data["items"]],
            None if cursor is None else str(cursor),
            data,
        )

    return decode


def items_of(kind: type[D], field: str = "items") -> Callable[[Any], list[D]]:
    return lambda data: [kind.wrap(item) for item in data[field]]


def count_of(field: str) -> Callable[[Any], int]:
    return lambda data: int(data[field])


def _new_key() -> str:
    return f"baton-client-{uuid.uuid4().hex}"


def _time(value: datetime | str | None) -> str | None:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("a time must be timezone-aware (e.g. datetime.now(UTC))")
        return value.isoformat()
    return value


# --- workflows (§3, §8) ----------------------------------------------------------------


def create_workflow(body: Mapping[str, Any], idempotency_key: str | None) -> Call[Workflow]:
    headers = {}
    if idempotency_key is not None:
        headers[IDEMPOTENCY_HEADER] = idempotency_key
    elif "id" not in body and "key" not in body:
        # As Stripe's clients do: a key of our own makes a retried create safe.
        headers[IDEMPOTENCY_HEADER] = _new_key()
    return Call(
        "POST", "/v1/workflows", Workflow.wrap, body=dict(body), headers=headers, idempotent=True
    )


def create_workflows(bodies: Iterable[Mapping[str, Any]]) -> Call[list[Workflow]]:
    items = [dict(body) for body in bodies]
    return Call(
        "POST",
        "/v1/workflows/batch",
        items_of(Workflow),
        body={"workflows": items},
        # Items with ids come back as they are when sent again; items without do not.
        idempotent=all("id" in item or "key" in item for item in items),
    )


def get_workflow(workflow_id: str) -> Call[Workflow]:
    return Call("GET", path("/v1/workflows/{}", workflow_id), Workflow.wrap, idempotent=True)


def list_workflows(
    status: str | None, name: str | None, limit: int | None, cursor: str | None
) -> Call[Page[WorkflowSummary]]:
    return Call(
        "GET",
        "/v1/workflows",
        page_of(WorkflowSummary),
        params=query(status=status, name=name, limit=limit, cursor=cursor),
        idempotent=True,
    )


def get_step(workflow_id: str, step_id: str) -> Call[StepDetail]:
    return Call(
        "GET",
        path("/v1/workflows/{}/steps/{}", workflow_id, step_id),
        StepDetail.wrap,
        idempotent=True,
    )


def get_dependencies(workflow_id: str, step_id: str) -> Call[Dependencies]:
    return Call(
        "GET",
        path("/v1/workflows/{}/steps/{}/dependencies", workflow_id, step_id),
        Dependencies.wrap,
        idempotent=True,
    )


def get_graph(workflow_id: str) -> Call[Graph]:
    return Call("GET", path("/v1/workflows/{}/graph", workflow_id), Graph.wrap, idempotent=True)


def list_events(workflow_id: str, after: int | str | None, limit: int | None) -> Call[Page[Event]]:
    decode_page = page_of(Event, "nextAfter")

    def decode(data: Any) -> Page[Event]:
        page = decode_page(data)
        if after is not None and str(after).isdigit():
            # A server without paging answers every event; `after` holds all the same.
            page.items = [e for e in page.items if not _at_or_before(e.get("id"), int(after))]
        return page

    return Call(
        "GET",
        path("/v1/workflows/{}/events", workflow_id),
        decode,
        params=query(after=after, limit=limit),
        idempotent=True,
    )


def _at_or_before(event_id: Any, after: int) -> bool:
    return isinstance(event_id, int) and event_id <= after


def stream_events(workflow_id: str) -> Call[None]:
    return Call(
        "GET",
        path("/v1/workflows/{}/events", workflow_id),
        headers={"Accept": "text/event-stream", "Cache-Control": "no-store"},
        idempotent=True,
    )


def cancel_workflow(workflow_id: str, compensate: bool) -> Call[Workflow]:
    return Call(
        "POST",
        path("/v1/workflows/{}/cancel", workflow_id),
        Workflow.wrap,
        body={"compensate": compensate},
    )


def retry_workflow(workflow_id: str) -> Call[Workflow]:
    return Call("POST", path("/v1/workflows/{}/retry", workflow_id), Workflow.wrap)


def retry_step(workflow_id: str, step_id: str) -> Call[Workflow]:
    return Call(
        "POST", path("/v1/workflows/{}/steps/{}/retry", workflow_id, step_id), Workflow.wrap
    )


# --- async-step callbacks (§3) ---------------------------------------------------------


def _callback_url(callback: str) -> str:
    # A full callbackUrl as a step request carries it, or just its token.
    if callback.startswith(("http://", "https://", "/")):
        return callback
    return path("/v1/callbacks/{}", callback)


def complete_callback(callback: str, result: Any) -> Call[CallbackAnswer]:
    return Call(
        "POST",
        _callback_url(callback),
        CallbackAnswer.wrap,
        body={"success": True, "result": result},
        authenticated=False,
    )


def fail_callback(callback: str, error: str, retry: bool) -> Call[CallbackAnswer]:
    body: dict[str, Any] = {"success": False, "error": error}
    if not retry:
        body["retry"] = False
    return Call(
        "POST", _callback_url(callback), CallbackAnswer.wrap, body=body, authenticated=False
    )


def heartbeat_callback(callback: str) -> Call[HeartbeatAnswer]:
    return Call(
        "POST",
        _callback_url(callback).rstrip("/") + "/heartbeat",
        HeartbeatAnswer.wrap,
        idempotent=True,
        authenticated=False,
    )


# --- jobs and queues (§7) --------------------------------------------------------------


def job_body(
    queue: str,
    payload: Mapping[str, Any] | None = None,
    *,
    idempotency_key: str | None = None,
    max_retries: int | None = None,
    scheduled_for: datetime | str | None = None,
    priority: int | None = None,
    visibility_timeout: float | None = None,
    flow_control: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``POST /v1/jobs`` body for these arguments (``None`` ones left out)."""
    body: dict[str, Any] = {"queue": queue, "payload": dict(payload or {})}
    optional = {
        "idempotencyKey": idempotency_key,
        "maxRetries": max_retries,
        "scheduledFor": _time(scheduled_for),
        "priority": priority,
        "visibilityTimeout": visibility_timeout,
        "flowControl": None if flow_control is None else dict(flow_control),
    }
    body.update({name: value for name, value in optional.items() if value is not None})
    return body


def enqueue_job(body: dict[str, Any]) -> Call[Job]:
    return Call("POST", "/v1/jobs", Job.wrap, body=body, idempotent="idempotencyKey" in body)


def enqueue_jobs(jobs: Iterable[Mapping[str, Any]], idempotency_key: str | None) -> Call[list[Job]]:
    return Call(
        "POST",
        "/v1/jobs/batch",
        items_of(Job),
        body={"jobs": [dict(job) for job in jobs]},
        headers={IDEMPOTENCY_HEADER: idempotency_key or _new_key()},
        idempotent=True,
    )


def get_job(job_id: str) -> Call[Job]:
    return Call("GET", path("/v1/jobs/{}", job_id), Job.wrap, idempotent=True)


def list_jobs(
    queue: str | None, status: str | None, limit: int | None, cursor: str | None
) -> Call[Page[Job]]:
    return Call(
        "GET",
        "/v1/jobs",
        page_of(Job),
        params=query(queue=queue, status=status, limit=limit, cursor=cursor),
        idempotent=True,
    )


def retry_job(job_id: str) -> Call[Job]:
    return Call("POST", path("/v1/jobs/{}/retry", job_id), Job.wrap)


def cancel_job(job_id: str) -> Call[Job]:
    return Call("POST", path("/v1/jobs/{}/cancel", job_id), Job.wrap)


def claim_jobs(
    queue: str,
    limit: int | None,
    visibility: float | None,
    wait: float | None,
    filter: Mapping[str, Any] | None,
    worker_id: str | None,
) -> Call[list[Job]]:
    body = query(
        limit=limit,
        visibility=visibility,
        wait=wait,
        filter=None if filter is None else dict(filter),
        workerId=worker_id,
    )
    return Call(
        "POST",
        path("/v1/queues/{}/claim", queue),
        items_of(Job, "jobs"),
        body=body,
        # The server answers after at most `wait` seconds; the read must outlast it.
        extra_timeout=float(wait or 0),
    )


def complete_job(job_id: str, lease_id: str, result: Any) -> Call[Job]:
    return Call(
        "POST",
        path("/v1/jobs/{}/complete", job_id),
        Job.wrap,
        body={"leaseId": lease_id, "result": result},
        # The very same complete answers 200 again.
        idempotent=True,
    )


def fail_job(
    job_id: str, lease_id: str, reason: str, retry: bool, retry_after: float | None
) -> Call[Job]:
    body = {"leaseId": lease_id, "reason": reason, "retry": retry}
    if retry_after is not None:
        body["retryAfter"] = retry_after
    return Call("POST", path("/v1/jobs/{}/fail", job_id), Job.wrap, body=body)


def heartbeat_job(job_id: str, lease_id: str, visibility: float | None) -> Call[Job]:
    return Call(
        "POST",
        path("/v1/jobs/{}/heartbeat", job_id),
        Job.wrap,
        body=query(leaseId=lease_id, visibility=visibility),
        idempotent=True,
    )


def list_queues() -> Call[Page[Queue]]:
    return Call("GET", "/v1/queues", page_of(Queue), idempotent=True)


def get_queue(queue: str) -> Call[Queue]:
    return Call("GET", path("/v1/queues/{}", queue), Queue.wrap, idempotent=True)


def queue_action(queue: str, action: str) -> Call[Queue]:
    # Pausing a paused queue (or resuming a running one) changes nothing.
    return Call("POST", path("/v1/queues/{}/", queue) + action, Queue.wrap, idempotent=True)


def replay_dlq(queue: str, limit: int | None) -> Call[int]:
    return Call(
        "POST",
        path("/v1/queues/{}/dlq/replay", queue),
        count_of("replayed"),
        body=query(limit=limit),
    )


def purge_dlq(queue: str) -> Call[int]:
    return Call("POST", path("/v1/queues/{}/dlq/purge", queue), count_of("purged"))


# --- schedules (§8) --------------------------------------------------------------------


def put_schedule(schedule_id: str, body: Mapping[str, Any]) -> Call[Schedule]:
    return Call(
        "PUT",
        path("/v1/schedules/{}", schedule_id),
        Schedule.wrap,
        body=dict(body),
        idempotent=True,
    )


def get_schedule(schedule_id: str) -> Call[Schedule]:
    return Call("GET", path("/v1/schedules/{}", schedule_id), Schedule.wrap, idempotent=True)


def list_schedules(limit: int | None, cursor: str | None) -> Call[Page[Schedule]]:
    return Call(
        "GET",
        "/v1/schedules",
        page_of(Schedule),
        params=query(limit=limit, cursor=cursor),
        idempotent=True,
    )


def delete_schedule(schedule_id: str) -> Call[None]:
    return Call("DELETE", path("/v1/schedules/{}", schedule_id), lambda _: None, idempotent=True)


def schedule_action(schedule_id: str, action: str) -> Call[Schedule]:
    # pause / resume: doing it twice changes nothing.
    return Call(
        "POST", path("/v1/schedules/{}/", schedule_id) + action, Schedule.wrap, idempotent=True
    )


def trigger_schedule(schedule_id: str) -> Call[Document]:
    return Call("POST", path("/v1/schedules/{}/trigger", schedule_id), Document.wrap)


# --- flow control (§9) -----------------------------------------------------------------


def put_flow_control(
    key: str, parallelism: int | None, rate: int | None, period: float | None
) -> Call[FlowControl]:
    return Call(
        "PUT",
        path("/v1/flow-control/{}", key),
        FlowControl.wrap,
        body=query(parallelism=parallelism, rate=rate, period=period),
        idempotent=True,
    )


def get_flow_control(key: str) -> Call[FlowControl]:
    return Call("GET", path("/v1/flow-control/{}", key), FlowControl.wrap, idempotent=True)


def list_flow_control() -> Call[Page[FlowControl]]:
    return Call("GET", "/v1/flow-control", page_of(FlowControl), idempotent=True)


def delete_flow_control(key: str) -> Call[None]:
    return Call("DELETE", path("/v1/flow-control/{}", key), lambda _: None, idempotent=True)


# --- the server itself -----------------------------------------------------------------


def server_document(route: str) -> Call[dict[str, Any]]:
    return Call("GET", route, dict, authenticated=False, idempotent=True)


def metrics() -> Call[str]:
    return Call("GET", "/metrics", str, authenticated=False, idempotent=True, json_answer=False)
