"""Client and AsyncClient against a recording mock transport: every operation's request.

Each row calls one client method and checks the request it sends (method, path, query,
body, headers) against DESIGN §3 and §7–§9, and the typed result it makes of a
contract-shaped answer. The same rows run through the sync and the async client.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fakes import (
    Recorder,
    answer,
    claimed_doc,
    event_doc,
    flow_doc,
    job_doc,
    queue_doc,
    schedule_doc,
    workflow_doc,
)

from baton import AsyncClient, Client, Page
from baton.documents import (
    CallbackAnswer,
    Dependencies,
    Event,
    FlowControl,
    Graph,
    HeartbeatAnswer,
    Job,
    Queue,
    Schedule,
    StepDetail,
    Workflow,
    WorkflowSummary,
)
from baton.resources import AsyncClaimedJob, ClaimedJob

KEY = "bk_test"
BASE = "http://baton.test"
CREATE = {"id": "order-1", "steps": [{"id": "validate", "url": "https://shop.example/validate"}]}
NO_BODY = object()


@dataclass
class Op:
    id: str
    call: Callable[[Any], Any]
    method: str
    path: str
    response: httpx.Response
    body: Any = NO_BODY
    params: dict[str, str] = field(default_factory=dict)
    check: Callable[[Any], Any] = lambda result: None
    headers: dict[str, str] = field(default_factory=dict)
    authenticated: bool = True


def is_(kind: type) -> Callable[[Any], None]:
    def check(result: Any) -> None:
        assert isinstance(result, kind), type(result)

    return check


def page_of(kind: type, cursor: str | None = None) -> Callable[[Any], None]:
    def check(result: Any) -> None:
        assert isinstance(result, Page)
        assert all(isinstance(item, kind) for item in result.items)
        assert result.items
        assert result.next_cursor == cursor

    return check


def list_of(kind: type, count: int) -> Callable[[Any], None]:
    def check(result: Any) -> None:
        assert isinstance(result, list)
        assert len(result) == count
        assert all(isinstance(item, kind) for item in result)

    return check


SUMMARY = {"id": "order-1", "name": "orders", "status": "failed", "createdAt": "x",
           "startedAt": "x", "completedAt": "x", "stepCount": 1, "error": None}  # fmt: skip
STEP = {**workflow_doc()["steps"][0], "attemptLog": [{"kind": "step", "number": 1}]}
GRAPH = {
    "nodes": [{"id": "a", "status": "completed", "kind": "step", "attempts": 1}],
    "edges": [{"from": "a", "to": "b"}],
}
CALLBACK = "http://callbacks.test/v1/callbacks/tok.en"

OPS = [
    # --- workflows
    Op("workflows.create", lambda c: c.workflows.create(CREATE), "POST", "/v1/workflows",
       answer(201, workflow_doc()), body=CREATE, check=is_(Workflow)),
    Op("workflows.create-key", lambda c: c.workflows.create({"steps": []}, idempotency_key="k1"),
       "POST", "/v1/workflows", answer(201, workflow_doc()), body={"steps": []},
       headers={"idempotency-key": "k1"}),
    Op("workflows.create_batch", lambda c: c.workflows.create_batch([CREATE, CREATE]), "POST",
       "/v1/workflows/batch", answer(201, {"items": [workflow_doc(), workflow_doc()]}),
       body={"workflows": [CREATE, CREATE]}, check=list_of(Workflow, 2)),
    Op("workflows.get", lambda c: c.workflows.get("order 1/x"), "GET",
       "/v1/workflows/order%201%2Fx", answer(200, workflow_doc()), check=is_(Workflow)),
    Op("workflows.list", lambda c: c.workflows.list(status="failed", name="orders", limit=2,
       cursor="c1"), "GET", "/v1/workflows",
       answer(200, {"items": [SUMMARY], "nextCursor": "c2"}),
       params={"status": "failed", "name": "orders", "limit": "2", "cursor": "c1"},
       check=page_of(WorkflowSummary, "c2")),
    Op("workflows.step", lambda c: c.workflows.step("order-1", "validate"), "GET",
       "/v1/workflows/order-1/steps/validate", answer(200, STEP), check=is_(StepDetail)),
    Op("workflows.dependencies", lambda c: c.workflows.dependencies("order-1", "validate"),
       "GET", "/v1/workflows/order-1/steps/validate/dependencies",
       answer(200, {"dependsOn": [], "dependedOnBy": ["charge"]}), check=is_(Dependencies)),
    Op("workflows.graph", lambda c: c.workflows.graph("order-1"), "GET",
       "/v1/workflows/order-1/graph", answer(200, GRAPH), check=is_(Graph)),
    Op("workflows.events_page", lambda c: c.workflows.events_page("order-1", after=3, limit=2),
       "GET", "/v1/workflows/order-1/events",
       answer(200, {"items": [event_doc(4), event_doc(5)], "nextAfter": 5}),
       params={"after": "3", "limit": "2"}, check=page_of(Event, "5")),
    Op("workflows.cancel", lambda c: c.workflows.cancel("order-1", compensate=True), "POST",
       "/v1/workflows/order-1/cancel", answer(200, workflow_doc(status="compensating")),
       body={"compensate": True}, check=is_(Workflow)),
    Op("workflows.retry", lambda c: c.workflows.retry("order-1"), "POST",
       "/v1/workflows/order-1/retry", answer(200, workflow_doc()), check=is_(Workflow)),
    Op("workflows.retry_step", lambda c: c.workflows.retry_step("order-1", "validate"), "POST",
       "/v1/workflows/order-1/steps/validate/retry", answer(200, workflow_doc()),
       check=is_(Workflow)),
    # --- async-step callbacks: the callbackUrl as given, without the API key
    Op("callbacks.complete", lambda c: c.callbacks.complete(CALLBACK, {"pages": 2}), "POST",
       "/v1/callbacks/tok.en", answer(200, {"accepted": True, "stepId": "a",
       "status": "completed"}), body={"success": True, "result": {"pages": 2}},
       check=is_(CallbackAnswer), authenticated=False),
    Op("callbacks.fail", lambda c: c.callbacks.fail("tok.en", "bad input", retry=False), "POST",
       "/v1/callbacks/tok.en", answer(200, {"accepted": True, "stepId": "a", "status": "failed"}),
       body={"success": False, "error": "bad input", "retry": False}, authenticated=False),
    Op("callbacks.heartbeat", lambda c: c.callbacks.heartbeat(CALLBACK), "POST",
       "/v1/callbacks/tok.en/heartbeat", answer(200, {"stepId": "a", "deadline": "x"}),
       check=is_(HeartbeatAnswer), authenticated=False),
    # --- jobs (§7)
    Op("jobs.enqueue", lambda c: c.jobs.enqueue("etl", {"n": 1}, priority=5, max_retries=2,
       idempotency_key="k", visibility_timeout=60,
       scheduled_for=datetime(2026, 12, 5, 9, tzinfo=UTC), flow_control={"key": "s"}),
       "POST", "/v1/jobs", answer(201, job_doc()),
       body={"queue": "etl", "payload": {"n": 1}, "priority": 5, "maxRetries": 2,
             "idempotencyKey": "k", "visibilityTimeout": 60,
             "scheduledFor": "2026-12-05T09:00:00+00:00", "flowControl": {"key": "s"}},
       check=is_(Job)),
    Op("jobs.enqueue-minimal", lambda c: c.jobs.enqueue("etl"), "POST", "/v1/jobs",
       answer(201, job_doc()), body={"queue": "etl", "payload": {}}),
    Op("jobs.enqueue_batch", lambda c: c.jobs.enqueue_batch([{"queue": "etl"}],
       idempotency_key="b1"), "POST", "/v1/jobs/batch", answer(201, {"items": [job_doc()]}),
       body={"jobs": [{"queue": "etl"}]}, headers={"idempotency-key": "b1"},
       check=list_of(Job, 1)),
    Op("jobs.get", lambda c: c.jobs.get("job_1"), "GET", "/v1/jobs/job_1",
       answer(200, job_doc()), check=is_(Job)),
    Op("jobs.list", lambda c: c.jobs.list(queue="etl", status="dlq", limit=5), "GET", "/v1/jobs",
       answer(200, {"items": [job_doc()], "nextCursor": None}),
       params={"queue": "etl", "status": "dlq", "limit": "5"}, check=page_of(Job)),
    Op("jobs.retry", lambda c: c.jobs.retry("job_1"), "POST", "/v1/jobs/job_1/retry",
       answer(200, job_doc()), check=is_(Job)),
    Op("jobs.cancel", lambda c: c.jobs.cancel("job_1"), "POST", "/v1/jobs/job_1/cancel",
       answer(200, job_doc(status="cancelled")), check=is_(Job)),
    Op("jobs.claim", lambda c: c.jobs.claim("etl", limit=10, visibility=30, wait=5,
       filter={"priority": {"gte": 5}}, worker_id="w-1"), "POST", "/v1/queues/etl/claim",
       answer(200, {"jobs": [claimed_doc("a"), claimed_doc("b")]}),
       body={"limit": 10, "visibility": 30, "wait": 5, "filter": {"priority": {"gte": 5}},
             "workerId": "w-1"}, check=list_of(Job, 2)),
    Op("jobs.complete", lambda c: c.jobs.complete("job_1", "lease_1", {"rows": 3}), "POST",
       "/v1/jobs/job_1/complete", answer(200, job_doc(status="completed")),
       body={"leaseId": "lease_1", "result": {"rows": 3}}, check=is_(Job)),
    Op("jobs.fail", lambda c: c.jobs.fail("job_1", "lease_1", "boom", retry=True, retry_after=10),
       "POST", "/v1/jobs/job_1/fail", answer(200, job_doc(status="failed")),
       body={"leaseId": "lease_1", "reason": "boom", "retry": True, "retryAfter": 10}),
    Op("jobs.heartbeat", lambda c: c.jobs.heartbeat("job_1", "lease_1", visibility=60), "POST",
       "/v1/jobs/job_1/heartbeat", answer(200, claimed_doc()),
       body={"leaseId": "lease_1", "visibility": 60}),
    # --- queues
    Op("queues.list", lambda c: c.queues.list(), "GET", "/v1/queues",
       answer(200, {"items": [queue_doc()]}), check=page_of(Queue)),
    Op("queues.get", lambda c: c.queues.get("etl"), "GET", "/v1/queues/etl",
       answer(200, queue_doc()), check=is_(Queue)),
    Op("queues.pause", lambda c: c.queues.pause("etl"), "POST", "/v1/queues/etl/pause",
       answer(200, queue_doc(paused=True)), check=is_(Queue)),
    Op("queues.resume", lambda c: c.queues.resume("etl"), "POST", "/v1/queues/etl/resume",
       answer(200, queue_doc()), check=is_(Queue)),
    Op("queues.replay_dlq", lambda c: c.queues.replay_dlq("etl", limit=100), "POST",
       "/v1/queues/etl/dlq/replay", answer(200, {"replayed": 7}), body={"limit": 100},
       check=lambda n: n == 7 or pytest.fail(str(n))),
    Op("queues.purge_dlq", lambda c: c.queues.purge_dlq("etl"), "POST",
       "/v1/queues/etl/dlq/purge", answer(200, {"purged": 3}),
       check=lambda n: n == 3 or pytest.fail(str(n))),
    # --- schedules (§8)
    Op("schedules.put", lambda c: c.schedules.put("nightly", {"cron": "0 3 * * *",
       "workflow": {"steps": []}}), "PUT", "/v1/schedules/nightly", answer(201, schedule_doc()),
       body={"cron": "0 3 * * *", "workflow": {"steps": []}}, check=is_(Schedule)),
    Op("schedules.get", lambda c: c.schedules.get("nightly"), "GET", "/v1/schedules/nightly",
       answer(200, schedule_doc()), check=is_(Schedule)),
    Op("schedules.list", lambda c: c.schedules.list(), "GET", "/v1/schedules",
       answer(200, {"items": [schedule_doc()]}), check=page_of(Schedule)),
    Op("schedules.delete", lambda c: c.schedules.delete("nightly"), "DELETE",
       "/v1/schedules/nightly", httpx.Response(204)),
    Op("schedules.pause", lambda c: c.schedules.pause("nightly"), "POST",
       "/v1/schedules/nightly/pause", answer(200, schedule_doc(paused=True))),
    Op("schedules.resume", lambda c: c.schedules.resume("nightly"), "POST",
       "/v1/schedules/nightly/resume", answer(200, schedule_doc())),
    Op("schedules.trigger", lambda c: c.schedules.trigger("nightly"), "POST",
       "/v1/schedules/nightly/trigger", answer(200, workflow_doc("nightly-20261121T100000Z"))),
    # --- flow control (§9)
    Op("flow_control.set", lambda c: c.flow_control.set("stripe", parallelism=5, rate=100,
       period=60), "PUT", "/v1/flow-control/stripe", answer(200, flow_doc()),
       body={"parallelism": 5, "rate": 100, "period": 60}, check=is_(FlowControl)),
    Op("flow_control.get", lambda c: c.flow_control.get("stripe"), "GET",
       "/v1/flow-control/stripe", answer(200, flow_doc()), check=is_(FlowControl)),
    Op("flow_control.list", lambda c: c.flow_control.list(), "GET", "/v1/flow-control",
       answer(200, {"items": [flow_doc()]}), check=page_of(FlowControl)),
    Op("flow_control.delete", lambda c: c.flow_control.delete("stripe"), "DELETE",
       "/v1/flow-control/stripe", httpx.Response(204)),
    # --- the server
    Op("health", lambda c: c.health(), "GET", "/healthz", answer(200, {"status": "ok"}),
       authenticated=False),
    Op("ready", lambda c: c.ready(), "GET", "/readyz",
       answer(200, {"status": "ok", "database": "ok"}), authenticated=False),
    Op("openapi", lambda c: c.openapi(), "GET", "/openapi.json", answer(200, {"openapi": "3.1"}),
       authenticated=False),
    Op("metrics", lambda c: c.metrics(), "GET", "/metrics",
       httpx.Response(200, text="# HELP x\n"), authenticated=False,
       check=lambda text: text.startswith("# HELP") or pytest.fail(text)),
]  # fmt: skip


def sync_client(recorder: Recorder, **options: Any) -> Client:
    options.setdefault("max_retries", 0)
    return Client(BASE, api_key=KEY, transport=httpx.MockTransport(recorder), **options)


def async_client(recorder: Recorder, **options: Any) -> AsyncClient:
    options.setdefault("max_retries", 0)
    return AsyncClient(BASE, api_key=KEY, transport=httpx.MockTransport(recorder), **options)


def fresh(response: httpx.Response) -> httpx.Response:
    # A response object is bound to the client that received it; each test gets a copy.
    return httpx.Response(response.status_code, headers=response.headers, content=response.read())


def check_request(op: Op, request: httpx.Request) -> None:
    assert request.method == op.method
    assert request.url.raw_path.decode().split("?")[0] == op.path
    assert dict(request.url.params) == op.params
    if op.body is NO_BODY:
        assert request.content in (b"",)
    else:
        assert json.loads(request.content) == op.body
    for name, value in op.headers.items():
        assert request.headers[name] == value
    auth = request.headers.get("authorization")
    assert auth == (f"Bearer {KEY}" if op.authenticated else None)
    assert request.headers["user-agent"].startswith("baton-workflow-client/")


@pytest.mark.parametrize("op", OPS, ids=[op.id for op in OPS])
def test_sync_operation(op: Op, recorder: Recorder) -> None:
    recorder.then(fresh(op.response))
    with sync_client(recorder) as client:
        result = op.call(client)
    [request] = recorder.requests
    check_request(op, request)
    op.check(result)


@pytest.mark.parametrize("op", OPS, ids=[op.id for op in OPS])
async def test_async_operation(op: Op, recorder: Recorder) -> None:
    recorder.then(fresh(op.response))
    async with async_client(recorder) as client:
        pending = op.call(client)
        assert inspect.isawaitable(pending), "every async operation is awaited"
        result = await pending
    [request] = recorder.requests
    check_request(op, request)
    op.check(result)


def test_every_resource_method_has_a_row_and_an_async_twin() -> None:
    """A method added to a resource without a row here (or without its twin) fails."""
    covered = {op.id.split("-")[0] for op in OPS}
    sync = Client(BASE, api_key=KEY)
    asynchronous = AsyncClient(BASE, api_key=KEY)
    loops = {"workflows.wait", "workflows.events", "workflows.list_all", "jobs.list_all"}
    for name in ("workflows", "jobs", "queues", "schedules", "flow_control", "callbacks"):
        resource, twin = getattr(sync, name), getattr(asynchronous, name)
        public = {m for m in dir(resource) if not m.startswith("_")}
        assert public == {m for m in dir(twin) if not m.startswith("_")}
        for method in public:
            assert f"{name}.{method}" in covered | loops, f"{name}.{method} has no test row"
    sync.close()


def test_create_without_an_id_sends_its_own_idempotency_key(recorder: Recorder) -> None:
    recorder.then(httpx.ConnectError("refused"), httpx.ReadError("reset"), answer(201, {}))
    with sync_client(recorder, max_retries=2) as client:
        client.workflows.create({"steps": [{"id": "a", "url": "https://x.example"}]})
    keys = [request.headers.get("idempotency-key") for request in recorder.requests]
    assert len(keys) == 3
    assert keys[0] and keys[0].startswith("baton-client-")
    assert len(set(keys)) == 1, "every attempt of one create carries the same key"


def test_create_with_an_id_sends_no_key(recorder: Recorder) -> None:
    recorder.then(answer(201, workflow_doc()))
    with sync_client(recorder) as client:
        client.workflows.create(CREATE)
    assert "idempotency-key" not in recorder.last.headers


def test_claimed_jobs_finish_themselves(recorder: Recorder) -> None:
    recorder.then(
        answer(200, {"jobs": [claimed_doc("a", "la")]}),
        answer(200, claimed_doc("a", "la")),
        answer(200, job_doc("a", "completed")),
        answer(200, {"jobs": [claimed_doc("b", "lb")]}),
        answer(200, job_doc("b", "failed")),
    )
    with sync_client(recorder) as client:
        [job] = client.jobs.claim("etl")
        assert isinstance(job, ClaimedJob)
        assert (job.payload, job.workflow, job.lease_id, job.attempt) == ({"n": 1}, None, "la", 1)
        job.heartbeat(visibility=45)
        assert job.complete(result={"ok": True}).status == "completed"
        [other] = client.jobs.claim("etl")
        other.fail("boom", retry=False)
    bodies = list(recorder.bodies())
    assert bodies[1] == {"leaseId": "la", "visibility": 45}
    assert bodies[2] == {"leaseId": "la", "result": {"ok": True}}
    assert bodies[4] == {"leaseId": "lb", "reason": "boom", "retry": False}
    assert recorder.requests[4].url.path == "/v1/jobs/b/fail"


async def test_async_claimed_jobs_finish_themselves(recorder: Recorder) -> None:
    recorder.then(
        answer(200, {"jobs": [claimed_doc("a", "la")]}),
        answer(200, claimed_doc("a", "la")),
        answer(200, job_doc("a", "failed")),
        answer(200, job_doc("a", "completed")),
    )
    async with async_client(recorder) as client:
        [job] = await client.jobs.claim("etl")
        assert isinstance(job, AsyncClaimedJob)
        await job.heartbeat()
        await job.fail("later", retry_after=5)
        await job.complete(7)
    bodies = list(recorder.bodies())
    assert bodies[1:] == [
        {"leaseId": "la"},
        {"leaseId": "la", "reason": "later", "retry": True, "retryAfter": 5},
        {"leaseId": "la", "result": 7},
    ]


def test_a_claim_reads_for_longer_than_its_long_poll(recorder: Recorder) -> None:
    recorder.default = answer(200, {"jobs": []})
    with sync_client(recorder, timeout=3) as client:
        client.jobs.claim("etl", wait=20)
    assert recorder.last.extensions["timeout"]["read"] == 23


def test_naive_times_are_refused() -> None:
    with Client(BASE, api_key=KEY) as client, pytest.raises(ValueError, match="timezone"):
        client.jobs.enqueue("etl", scheduled_for=datetime(2026, 1, 1))


def test_url_and_key_come_from_the_environment(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATON_URL", "http://env.test:9/")
    monkeypatch.setenv("BATON_API_KEY", "bk_env")
    recorder.then(answer(200, workflow_doc()))
    with Client(transport=httpx.MockTransport(recorder)) as client:
        assert client.base_url == "http://env.test:9"
        client.workflows.get("order-1")
    assert str(recorder.last.url) == "http://env.test:9/v1/workflows/order-1"
    assert recorder.last.headers["authorization"] == "Bearer bk_env"
