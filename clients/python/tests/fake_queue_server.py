"""A test double of Baton's job queue (DESIGN §7), in memory, for the worker's tests.

It serves the calls a worker makes — ``POST /v1/jobs``, ``GET /v1/jobs/{id}``,
``POST /v1/queues/{queue}/claim`` (long poll, leases, priority order),
``POST /v1/jobs/{id}/complete|fail|heartbeat`` (409 ``lease_lost`` for a stale lease) —
with the contract's shapes, and records every call (``log``) so tests can check what
the worker did and when. A lease that runs out is a failed attempt, as in §7. It is
not the server: it has no database, no namespaces and no other endpoints.

``FakeQueueServer`` runs it in uvicorn on a free loopback port in a thread, so the
client under test talks real HTTP.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

API_KEY = "bk_fake"


def _iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, UTC).isoformat().replace("+00:00", "Z")


@dataclass
class FakeJob:
    id: str
    queue: str
    payload: dict[str, Any]
    priority: int = 0
    max_retries: int = 3
    visibility_timeout: float = 30.0
    status: str = "pending"
    attempts: int = 0
    result: Any = None
    last_error: Any = None
    lease_id: str | None = None
    lease_expires: float | None = None
    claimed_at: float | None = None
    due: float = field(default_factory=time.time)
    worker_id: str | None = None
    attempt_log: list[dict[str, Any]] = field(default_factory=list)
    created: float = field(default_factory=time.time)

    def document(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "queue": self.queue,
            "status": self.status,
            "payload": self.payload,
            "result": self.result,
            "priority": self.priority,
            "attempts": self.attempts,
            "attempt": self.attempts,
            "maxRetries": self.max_retries,
            "idempotencyKey": None,
            "scheduledFor": None,
            "nextAttemptAt": _iso(self.due) if self.status == "failed" else None,
            "createdAt": _iso(self.created),
            "claimedAt": _iso(self.claimed_at),
            "completedAt": None,
            "leaseId": self.lease_id,
            "leaseExpiresAt": _iso(self.lease_expires),
            "visibilityTimeout": self.visibility_timeout,
            "workerId": self.worker_id,
            "lastError": self.last_error,
            "workflow": None,
            "attemptLog": self.attempt_log,
        }


def problem(status: int, detail: str, code: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"https://baton.dev/problems/{'conflict' if status == 409 else 'not-found'}",
        "title": {404: "Not Found", 409: "Conflict", 401: "Unauthorized"}.get(status, "Error"),
        "status": status,
        "detail": detail,
        "errors": [],
    }
    if code:
        body["code"] = code
    return JSONResponse(body, status_code=status, media_type="application/problem+json")


class FakeQueue:
    """The state and the endpoints."""

    def __init__(self) -> None:
        self.jobs: dict[str, FakeJob] = {}
        self.log: list[tuple[float, str, str, dict[str, Any]]] = []
        self.lock = threading.Lock()

    # --- for tests, from any thread
    def add(self, queue: str, payload: dict[str, Any], **options: Any) -> FakeJob:
        job = FakeJob(f"job_{uuid.uuid4().hex[:10]}", queue, payload, **options)
        with self.lock:
            self.jobs[job.id] = job
        return job

    def calls(self, kind: str) -> list[tuple[float, str, dict[str, Any]]]:
        with self.lock:
            return [(at, job_id, body) for at, what, job_id, body in self.log if what == kind]

    def _record(self, kind: str, job_id: str, body: dict[str, Any]) -> None:
        self.log.append((time.monotonic(), kind, job_id, body))

    # --- §7 rules
    def _reap(self, now: float) -> None:
        for job in self.jobs.values():
            if (
                job.status == "claimed"
                and job.lease_expires is not None
                and job.lease_expires < now
            ):
                self._failed(job, "visibility timeout", True, None, now)

    def _failed(
        self, job: FakeJob, reason: str, retry: bool, after: float | None, now: float
    ) -> None:
        job.last_error = reason
        job.lease_id = None
        job.attempt_log[-1].update(finishedAt=_iso(now), outcome="failed", error=reason)
        if retry and job.attempts <= job.max_retries:
            job.status = "failed"
            job.due = now + (0.05 if after is None else after)
        else:
            job.status = "dlq"

    def _due(self, queue: str, now: float) -> list[FakeJob]:
        ready = [
            job
            for job in self.jobs.values()
            if job.queue == queue and job.status in ("pending", "failed") and job.due <= now
        ]
        return sorted(ready, key=lambda job: (-job.priority, job.due, job.created))

    async def enqueue(self, request: Request) -> JSONResponse:
        body = await request.json()
        options = {"priority": body.get("priority", 0), "max_retries": body.get("maxRetries", 3)}
        if "visibilityTimeout" in body:
            options["visibility_timeout"] = body["visibilityTimeout"]
        job = self.add(body["queue"], body.get("payload", {}), **options)
        return JSONResponse(job.document(), status_code=201)

    async def get(self, request: Request) -> JSONResponse:
        job = self.jobs.get(request.path_params["job_id"])
        if job is None:
            return problem(404, "no such job")
        return JSONResponse(job.document())

    async def claim(self, request: Request) -> JSONResponse:
        body = await request.json()
        queue = request.path_params["queue"]
        limit = body.get("limit", 1)
        deadline = time.time() + body.get("wait", 0)
        while True:
            now = time.time()
            with self.lock:
                self._reap(now)
                taken = self._due(queue, now)[:limit]
                for job in taken:
                    job.status = "claimed"
                    job.attempts += 1
                    job.lease_id = f"lease_{uuid.uuid4().hex[:10]}"
                    job.claimed_at = now
                    job.worker_id = body.get("workerId")
                    job.lease_expires = now + body.get("visibility", job.visibility_timeout)
                    job.attempt_log.append(
                        {
                            "number": job.attempts,
                            "workerId": job.worker_id,
                            "claimedAt": _iso(now),
                            "finishedAt": None,
                            "outcome": None,
                            "error": None,
                        }
                    )
                    self._record("claim", job.id, body)
                documents = [job.document() for job in taken]
            if documents or now >= deadline:
                return JSONResponse({"jobs": documents})
            await asyncio.sleep(0.02)

    def _leased(self, job_id: str, lease_id: str) -> FakeJob | JSONResponse:
        job = self.jobs.get(job_id)
        if job is None:
            return problem(404, "no such job")
        if job.lease_id != lease_id or job.status != "claimed":
            return problem(409, "the lease is not the job's current one", "lease_lost")
        return job

    async def complete(self, request: Request) -> JSONResponse:
        body = await request.json()
        job_id = request.path_params["job_id"]
        with self.lock:
            self._record("complete", job_id, body)
            job = self._leased(job_id, body["leaseId"])
            if isinstance(job, JSONResponse):
                return job
            job.status, job.result, job.lease_id = "completed", body.get("result"), None
            job.attempt_log[-1].update(finishedAt=_iso(time.time()), outcome="completed")
            return JSONResponse(job.document())

    async def fail(self, request: Request) -> JSONResponse:
        body = await request.json()
        job_id = request.path_params["job_id"]
        with self.lock:
            self._record("fail", job_id, body)
            job = self._leased(job_id, body["leaseId"])
            if isinstance(job, JSONResponse):
                return job
            self._failed(
                job, body["reason"], body.get("retry", True), body.get("retryAfter"), time.time()
            )
            return JSONResponse(job.document())

    async def heartbeat(self, request: Request) -> JSONResponse:
        body = await request.json()
        job_id = request.path_params["job_id"]
        with self.lock:
            self._record("heartbeat", job_id, body)
            job = self._leased(job_id, body["leaseId"])
            if isinstance(job, JSONResponse):
                return job
            job.lease_expires = time.time() + body.get("visibility", job.visibility_timeout)
            return JSONResponse(job.document())

    def app(self) -> Starlette:
        async def authenticated(request: Request, endpoint: Any) -> JSONResponse:
            if request.headers.get("authorization") != f"Bearer {API_KEY}":
                return problem(401, "a valid API key is required")
            return await endpoint(request)

        def route(path: str, endpoint: Any, method: str) -> Route:
            async def guarded(request: Request) -> JSONResponse:
                return await authenticated(request, endpoint)

            return Route(path, guarded, methods=[method])

        return Starlette(
            routes=[
                route("/v1/jobs", self.enqueue, "POST"),
                route("/v1/jobs/{job_id}", self.get, "GET"),
                route("/v1/queues/{queue}/claim", self.claim, "POST"),
                route("/v1/jobs/{job_id}/complete", self.complete, "POST"),
                route("/v1/jobs/{job_id}/fail", self.fail, "POST"),
                route("/v1/jobs/{job_id}/heartbeat", self.heartbeat, "POST"),
            ]
        )


class FakeQueueServer:
    """``FakeQueue`` served by uvicorn on a free loopback port, in a thread."""

    def __init__(self) -> None:
        self.state = FakeQueue()
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.state.app(), host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FakeQueueServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the fake queue server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
