"""The console's reads (app/console): read-only queries only the console asks.

Lists filtered by time or id prefix with per-status counts, an event page newest
first, a workflow's whole attempt log in a compact form for the timeline, the
state of its callbacks, a step's current run, and the stored API key a session
stands for. Each takes scoped workflow ids (see app.tenants) and answers plain
values; none writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tortoise.expressions import Q
from tortoise.functions import Count

from app.engine import DeliveryKind, WorkflowStatus, iso
from app.errors import StoreError
from app.keys import hash_api_key
from app.models import ApiKey, Attempt, Delivery, Event, Step, Workflow
from app.store.render import decode_cursor, encode_cursor, summary
from app.store.sql import UNAVAILABLE
from app.tenants import public_id, scoped_id

#: Most attempts the timeline loads for one workflow.
MAX_TIMELINE_ATTEMPTS = 50_000
#: Most distinct workflow names offered as suggestions.
MAX_NAMES = 200


@dataclass(frozen=True, slots=True)
class WorkflowFilter:
    """What the workflows page asks for (every field optional)."""

    namespace: str
    status: str | None = None
    name: str | None = None
    #: Workflows whose public id starts with this.
    id_prefix: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None

    def query(self, *, with_status: bool = True) -> Any:
        query = Workflow.filter(namespace=self.namespace)
        if with_status and self.status:
            query = query.filter(status=self.status)
        if self.name:
            query = query.filter(name=self.name)
        if self.id_prefix:
            query = query.filter(id__startswith=scoped_id(self.namespace, self.id_prefix))
        if self.created_from is not None:
            query = query.filter(created_at__gte=self.created_from)
        if self.created_to is not None:
            query = query.filter(created_at__lt=self.created_to)
        return query


# --------------------------------------------------------------------------- keys


async def find_stored_key(key: str) -> tuple[str, str] | None:
    """(id, namespace) of the unrevoked stored key ``key``, looked up by its hash."""
    try:
        row = (
            await ApiKey.filter(key_hash=hash_api_key(key), revoked_at__isnull=True)
            .first()
            .values_list("id", "namespace")
        )
    except UNAVAILABLE as exc:
        raise StoreError(f"could not check the API key: {type(exc).__name__}") from exc
    return None if row is None else (str(row[0]), str(row[1]))


async def stored_key_namespace(key_id: str) -> str | None:
    """The namespace of stored key ``key_id`` while it is not revoked, else None."""
    try:
        namespace = (
            await ApiKey.filter(id=key_id, revoked_at__isnull=True)
            .first()
            .values_list("namespace", flat=True)
        )
    except UNAVAILABLE as exc:
        raise StoreError(f"could not check the API key: {type(exc).__name__}") from exc
    return None if namespace is None else str(namespace)


# --------------------------------------------------------------------------- workflows


async def list_workflows(
    where: WorkflowFilter, *, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """Summaries newest first, as ``GET /v1/workflows`` answers them, and the next cursor.

    Raises ValueError for a cursor this server did not make.
    """
    query = where.query()
    if cursor:
        created_at, last_id = decode_cursor(cursor)
        last = scoped_id(where.namespace, last_id)
        query = query.filter(Q(created_at__lt=created_at) | Q(created_at=created_at, id__lt=last))
    rows = await query.order_by("-created_at", "-id").limit(limit + 1)
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1].created_at, public_id(rows[-1].id))
    return [summary(w) for w in rows], next_cursor


async def count_by_status(where: WorkflowFilter) -> dict[str, int]:
    """How many workflows match ``where`` (its status aside) in each status, zeros included."""
    rows = (
        await where.query(with_status=False)
        .annotate(n=Count("id"))
        .group_by("status")
        .values_list("status", "n")
    )
    counts = {status.value: 0 for status in WorkflowStatus}
    counts.update({str(status): int(n) for status, n in rows})
    return counts


async def workflow_names(namespace: str) -> list[str]:
    """The namespace's distinct workflow names, sorted (at most MAX_NAMES)."""
    names = (
        await Workflow.filter(namespace=namespace, name__isnull=False)
        .distinct()
        .order_by("name")
        .limit(MAX_NAMES)
        .values_list("name", flat=True)
    )
    return [str(n) for n in names]


# --------------------------------------------------------------------------- one workflow


async def last_event_id(workflow_id: str) -> int:
    """The id of the workflow's latest event (0 when it has none)."""
    last: Any = (
        await Event.filter(workflow_id=workflow_id)
        .order_by("-id")
        .first()
        .values_list("id", flat=True)
    )
    return int(last or 0)


async def events_before(
    workflow_id: str, *, before: int | None, limit: int
) -> list[dict[str, Any]]:
    """The workflow's events newest first, older than event id ``before`` when given."""
    query = Event.filter(workflow_id=workflow_id)
    if before is not None:
        query = query.filter(id__lt=before)
    rows = await query.order_by("-id").limit(limit)
    return [
        {
            "id": e.id,
            "type": e.type,
            "workflowId": public_id(workflow_id),
            "stepId": e.step_id,
            "at": iso(e.at),
            "data": e.data or {},
        }
        for e in rows
    ]


async def timeline(workflow_id: str) -> list[list[Any]]:
    """Every recorded attempt of a step or compensation, oldest first, as compact rows for
    the timeline: ``[stepId, kind, number, startedAt (epoch ms), durationMs, httpStatus,
    outcome]``."""
    rows = (
        await Attempt.filter(
            workflow_id=workflow_id,
            kind__in=[DeliveryKind.STEP.value, DeliveryKind.COMPENSATION.value],
        )
        .order_by("id")
        .limit(MAX_TIMELINE_ATTEMPTS)
        .values_list(
            "step_id", "kind", "number", "started_at", "duration_ms", "http_status", "outcome"
        )
    )
    return [
        [step, kind, number, round(started.timestamp() * 1000, 1), duration, http, outcome]
        for step, kind, number, started, duration, http, outcome in rows
    ]


async def callback_attempts(workflow_id: str) -> list[dict[str, Any]]:
    """The attempts of the workflow's onComplete / onError requests, oldest first."""
    rows = await Attempt.filter(
        workflow_id=workflow_id,
        kind__in=[DeliveryKind.ON_COMPLETE.value, DeliveryKind.ON_ERROR.value],
    ).order_by("id")
    return [
        {
            "kind": a.kind,
            "number": a.number,
            "webhookId": a.message_id,
            "startedAt": iso(a.started_at),
            "durationMs": a.duration_ms,
            "httpStatus": a.http_status,
            "outcome": a.outcome,
            "error": a.error,
            "responseExcerpt": a.response_excerpt,
        }
        for a in rows
    ]


async def callback_states(workflow_id: str) -> dict[str, str | None]:
    """``on_complete`` / ``on_error`` -> ``running`` (owed), ``completed``, ``failed`` or None."""
    states: dict[str, str | None] = {
        DeliveryKind.ON_COMPLETE.value: None,
        DeliveryKind.ON_ERROR.value: None,
    }
    events = (
        await Event.filter(workflow_id=workflow_id, type__in=list(CALLBACK_OUTCOMES))
        .order_by("id")
        .values_list("type", "data")
    )
    for type_, data in events:
        kind = (data or {}).get("kind")
        if kind in states:
            states[kind] = CALLBACK_OUTCOMES[type_]
    owed = await Delivery.filter(workflow_id=workflow_id, kind__in=list(states)).values_list(
        "kind", flat=True
    )
    for kind in owed:
        states[str(kind)] = "running"
    return states


#: Callback event type -> what the console shows.
CALLBACK_OUTCOMES = {"callback.delivered": "completed", "callback.failed": "failed"}


async def step_run(workflow_id: str, step_id: str) -> str | None:
    """The id of the step's current run (what its webhook-id is made from)."""
    run = (
        await Step.filter(workflow_id=workflow_id, step_id=step_id)
        .first()
        .values_list("run_id", flat=True)
    )
    return None if run is None else str(run)
