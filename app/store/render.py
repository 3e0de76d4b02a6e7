"""Rows rendered as the API's JSON documents (DESIGN §3), and list cursors.

Pure functions: a row (a model instance or a plain record) in, a dict in the
wire shape out — camelCase, ISO 8601 times, public ids (the namespace prefix
removed).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import orjson

from app.engine import OnFailure, iso
from app.machine import outcome_lists
from app.models import Attempt, Event, Step, Workflow
from app.schemas import ID_PATTERN
from app.store.rows import step_state
from app.tenants import public_id

_ID = re.compile(ID_PATTERN)


def summary(w: Workflow) -> dict[str, Any]:
    return {
        "id": public_id(w.id),
        "name": w.name,
        "status": w.status,
        "createdAt": iso(w.created_at),
        "startedAt": iso(w.started_at),
        "completedAt": iso(w.completed_at),
        "stepCount": w.step_count,
        "error": w.error,
    }


def status_document(
    w: Workflow | SimpleNamespace, steps: Sequence[Step | SimpleNamespace]
) -> dict[str, Any]:
    lists = outcome_lists(step_state(s, None) for s in steps)
    return {
        "id": public_id(w.id),
        "name": w.name,
        "status": w.status,
        "context": w.context,
        "saga": w.saga,
        "failFast": w.fail_fast,
        "previousSteps": w.previous_steps,
        "timeout": w.timeout,
        "onComplete": w.on_complete,
        "onError": w.on_error,
        "createdAt": iso(w.created_at),
        "startAt": iso(w.start_at),
        "startedAt": iso(w.started_at),
        "completedAt": iso(w.completed_at),
        "scheduleId": public_id(w.schedule_id) if w.schedule_id else None,
        "scheduledAt": iso(w.scheduled_at),
        "currentSteps": lists["currentSteps"],
        "completedSteps": lists["completedSteps"],
        "failedSteps": lists["failedSteps"],
        "skippedSteps": lists["skippedSteps"],
        "results": lists["results"],
        "error": w.error,
        "steps": [step_document(s) for s in steps],
    }


def step_document(s: Step | SimpleNamespace) -> dict[str, Any]:
    retry = s.retry or {}
    return {
        "id": s.step_id,
        "url": s.url,
        "dependsOn": list(s.depends_on),
        "status": s.status,
        "attempts": s.attempts,
        "maxAttempts": retry.get("maxAttempts"),
        "startedAt": iso(s.started_at),
        "completedAt": iso(s.completed_at),
        "result": s.result,
        "error": s.error,
        "compensation": s.compensation,
        "compensationStatus": s.compensation_status,
        "when": s.condition,
        "continueOnFailure": s.on_failure == OnFailure.IGNORE,
        "onFailure": s.on_failure,
        "timeout": s.timeout,
        "retries": retry,
    }


def attempt_document(a: Attempt) -> dict[str, Any]:
    return {
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


def event_document(e: Event) -> dict[str, Any]:
    return {
        "id": e.id,
        "type": e.type,
        "workflowId": public_id(e.workflow_id),  # type: ignore[attr-defined]
        "stepId": e.step_id,
        "at": iso(e.at),
        "data": e.data or {},
    }


class EventRenderer:
    """Event rows of one workflow as the JSON of their documents, without decoding them.

    An event's ``data`` is stored as JSON text and sent as JSON text: parsing it to
    write it out again would cost most of a replay (20,000 events of one workflow,
    read by every client that reconnects). The stored text is used as it is when it
    is one line (it always is: JSON encoders escape newlines); anything else is
    written out again.
    """

    def __init__(self, workflow_id: str, parse_time: Any) -> None:
        self._workflow = orjson.dumps(public_id(workflow_id))
        self._parse_time = parse_time
        #: Stored time -> its wire form (a transaction stamps its events with one time).
        self._times: dict[Any, bytes] = {}

    def render(self, row: dict[str, Any]) -> bytes:
        """``{"id","type","workflowId","stepId","at","data"}`` of one row, as JSON bytes."""
        at = self._times.get(row["at"])
        if at is None:
            at = orjson.dumps(iso(self._parse_time(row["at"])))
            if len(self._times) > 64:
                self._times.clear()
            self._times[row["at"]] = at
        data = row["data"]
        if isinstance(data, str) and "\n" not in data:
            raw = data.encode()
        else:
            raw = orjson.dumps(orjson.loads(data) if isinstance(data, str) else (data or {}))
        step = row["step_id"]
        return b"".join(
            (
                b'{"id":',
                str(row["id"]).encode(),
                b',"type":',
                orjson.dumps(row["type"]),
                b',"workflowId":',
                self._workflow,
                b',"stepId":',
                b"null" if step is None else orjson.dumps(step),
                b',"at":',
                at,
                b',"data":',
                raw,
                b"}",
            )
        )


def encode_cursor(created_at: datetime, workflow_id: str) -> str:
    raw = orjson.dumps([created_at.astimezone(UTC).isoformat(), workflow_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Parse a list cursor; ValueError when it was not made by encode_cursor.

    Only what ``encode_cursor`` can make passes: a time that is a UTC datetime
    and a valid workflow id (anything else would reach the database as a value
    it refuses, such as a NUL character or an id longer than the column).
    """
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, workflow_id = orjson.loads(base64.urlsafe_b64decode(padded))
        when = datetime.fromisoformat(created)
        if not isinstance(workflow_id, str) or not _ID.fullmatch(workflow_id):
            raise ValueError("bad cursor")
        if when.tzinfo is None:
            raise ValueError("bad cursor")
        # Raises OverflowError for a time beyond year 1 to 9999 once in UTC.
        return when.astimezone(UTC), workflow_id
    except (ValueError, TypeError, OverflowError, orjson.JSONDecodeError) as exc:
        raise ValueError("invalid cursor") from exc
