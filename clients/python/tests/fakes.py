"""Test doubles for the client: contract-shaped documents and a recording mock transport.

``Recorder`` is the handler of an ``httpx.MockTransport``: it records every request and
answers from a queue of scripted responses (or a default), so a test can check exactly
what the client sent and how it read the answer. The documents follow DESIGN §3 and §7–§9.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx

NOW = "2026-11-21T10:00:00.000Z"

#: A step request body as Baton sends it (DESIGN §4).
STEP_BODY: dict[str, Any] = {
    "workflowId": "order-123",
    "workflowName": "order-processing",
    "stepId": "charge",
    "attempt": 2,
    "kind": "step",
    "context": {"orderId": "order_123"},
    "previousSteps": {"validate": {"status": "completed", "result": {"total": 4200}}},
    "deadline": "2026-11-21T10:00:05Z",
    "callbackUrl": "http://127.0.0.1:8000/v1/callbacks/tok",
}


def workflow_doc(workflow_id: str = "order-1", status: str = "running", **fields: Any) -> dict:
    return {
        "id": workflow_id,
        "workflowId": workflow_id,
        "name": "orders",
        "status": status,
        "context": {"orderId": 1},
        "saga": False,
        "failFast": True,
        "timeout": 86400.0,
        "onComplete": None,
        "onError": None,
        "createdAt": NOW,
        "startedAt": NOW,
        "completedAt": None,
        "currentSteps": ["validate"],
        "completedSteps": [],
        "failedSteps": [],
        "skippedSteps": [],
        "results": {},
        "error": None,
        "steps": [
            {
                "id": "validate",
                "url": "https://shop.example/validate",
                "dependsOn": [],
                "status": "running",
                "attempts": 1,
                "maxAttempts": 3,
                "startedAt": NOW,
                "completedAt": None,
                "result": None,
                "error": {"code": "http_error", "message": "HTTP 503", "httpStatus": 503},
                "compensation": None,
                "compensationStatus": None,
            }
        ],
        **fields,
    }


def job_doc(job_id: str = "job_1", status: str = "pending", **fields: Any) -> dict:
    return {
        "id": job_id,
        "queue": "etl",
        "status": status,
        "payload": {"n": 1},
        "result": None,
        "priority": 0,
        "attempts": 0,
        "maxRetries": 3,
        "idempotencyKey": None,
        "scheduledFor": None,
        "nextAttemptAt": None,
        "createdAt": NOW,
        "claimedAt": None,
        "completedAt": None,
        "leaseExpiresAt": None,
        "workerId": None,
        "lastError": None,
        "workflow": None,
        "attemptLog": [],
        **fields,
    }


def claimed_doc(job_id: str = "job_1", lease_id: str = "lease_1", **fields: Any) -> dict:
    return job_doc(
        job_id,
        "claimed",
        leaseId=lease_id,
        attempt=1,
        attempts=1,
        claimedAt=NOW,
        leaseExpiresAt="2026-11-21T10:00:30.000Z",
        visibilityTimeout=30,
        **fields,
    )


def queue_doc(name: str = "etl", paused: bool = False) -> dict:
    counts = dict.fromkeys(["pending", "claimed", "completed", "failed", "dlq", "cancelled"], 0)
    return {"name": name, "paused": paused, "counts": counts, "oldestPendingAt": None}


def schedule_doc(schedule_id: str = "nightly", paused: bool = False) -> dict:
    return {
        "id": schedule_id,
        "cron": "0 3 * * *",
        "timezone": "UTC",
        "overlap": "skip",
        "catchupWindow": 300,
        "paused": paused,
        "workflow": {"steps": [{"id": "a", "url": "https://shop.example/a"}]},
        "nextRunAt": "2026-11-22T03:00:00.000Z",
        "lastRunAt": None,
        "firedCount": 0,
        "recentRuns": [
            {"scheduledAt": NOW, "firedAt": NOW, "workflowId": "nightly-1", "outcome": "fired"}
        ],
    }


def flow_doc(key: str = "stripe") -> dict:
    return {
        "key": key,
        "parallelism": 5,
        "rate": 100,
        "period": 60,
        "inFlight": 1,
        "waiting": 0,
        "heldUntil": None,
    }


def event_doc(event_id: int, kind: str = "step.started", workflow_id: str = "order-1") -> dict:
    return {
        "id": event_id,
        "type": kind,
        "workflowId": workflow_id,
        "stepId": None,
        "at": NOW,
        "data": {},
    }


def sse(events: list[dict]) -> bytes:
    return "".join(
        f"id: {e['id']}\nevent: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events
    ).encode()


def answer(status: int, body: Any = None, **headers: str) -> httpx.Response:
    content_type = "application/problem+json" if status >= 400 else "application/json"
    content = b"" if body is None else json.dumps(body).encode()
    return httpx.Response(
        status, content=content, headers={"content-type": content_type, **headers}
    )


Scripted = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


class Recorder:
    """Records requests; answers with scripted responses in order, then ``default``."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.script: list[Scripted] = []
        self.default: Scripted | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        item = self.script.pop(0) if self.script else self.default
        if item is None:
            raise AssertionError(f"unexpected request {request.method} {request.url}")
        if isinstance(item, Exception):
            raise item
        if callable(item):
            return item(request)
        return item

    def then(self, *items: Scripted) -> Recorder:
        self.script.extend(items)
        return self

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]

    def bodies(self) -> Iterator[Any]:
        for request in self.requests:
            yield json.loads(request.content) if request.content else None


class BrokenStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body that sends ``chunks`` and then breaks like a dropped connection."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks
        raise httpx.ReadError("connection reset by peer")

    async def __aiter__(self) -> Any:
        for chunk in self.chunks:
            yield chunk
        raise httpx.ReadError("connection reset by peer")
