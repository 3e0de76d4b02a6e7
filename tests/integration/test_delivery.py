"""Delivery through the real dispatcher and store, with the handlers mocked by respx.

Checks what goes over the wire (Standard Webhooks signature, Baton headers, the
exact body of DESIGN §4), how each kind of answer is read, and that retries wait
for the due times stored in the database.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import httpx
import orjson
import pytest
import respx
from standardwebhooks.webhooks import Webhook

from app import __version__
from app.db import close_database, open_database
from app.delivery import Deliverer
from app.dispatcher import Dispatcher
from app.engine import DeliveryKind, RetryPolicy, StepErrorCode
from app.netguard import NetPolicy
from app.schemas import canonical_json, parse_create_request
from app.store import OutboundRequest, Store
from baton.signing import Signer, generate_secret

SECRET = generate_secret()
OLD_SECRET = generate_secret()


class Harness:
    def __init__(self, store: Store, router: respx.MockRouter, dispatcher: Dispatcher) -> None:
        self.store = store
        self.router = router
        self.dispatcher = dispatcher

    async def create(self, body: dict[str, Any]) -> str:
        model, document = parse_create_request(
            orjson.dumps(body), check_url=lambda u: None, check_condition=lambda s: None
        )
        digest = hashlib.sha256(canonical_json(document)).hexdigest()
        created, _ = await self.store.create_workflow(model, request_hash=digest)
        self.dispatcher.wake()
        return str(created["id"])

    async def wait(self, workflow_id: str, within: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            document = await self.store.get_workflow(workflow_id)
            assert document is not None
            if document["status"] not in ("pending", "running") and not (
                await self.store.has_pending_deliveries(workflow_id)
            ):
                return document
            await asyncio.sleep(0.02)
        raise AssertionError(f"workflow {workflow_id} did not finish: {document}")

    def requests(self, path: str) -> list[httpx.Request]:
        return [c.request for c in self.router.calls if c.request.url.path == path]


@pytest.fixture
async def harness(database_url: str) -> AsyncIterator[Harness]:
    await open_database(database_url)
    router = respx.MockRouter(assert_all_called=False, assert_all_mocked=True)
    store = Store()

    def callback_url(req: OutboundRequest) -> str:
        return f"http://baton.test/v1/callbacks/{req.workflow_id}.{req.step_id}"

    deliverer = Deliverer(
        signer=Signer([SECRET, OLD_SECRET]),
        policy=NetPolicy(allow_private=False),
        callback_url=callback_url,
        max_connections=16,
        transport=httpx.MockTransport(router.async_handler),
    )
    dispatcher = Dispatcher(store, deliverer, max_concurrency=16, lease_seconds=30)
    dispatcher.start()
    try:
        yield Harness(store, router, dispatcher)
    finally:
        await dispatcher.stop(grace=1)
        await deliverer.aclose()
        await close_database()


def ok(result: Any = None) -> httpx.Response:
    return httpx.Response(200, json={"success": True, "result": result})


async def test_signed_request_with_headers_and_body(harness: Harness) -> None:
    harness.router.post("https://shop.example/validate").mock(return_value=ok({"total": 4200}))
    harness.router.post("https://shop.example/charge").mock(return_value=ok({"charged": True}))
    workflow_id = await harness.create(
        {
            "id": "order-123",
            "name": "order-processing",
            "context": {"orderId": "order_123"},
            "steps": [
                {"id": "validate", "url": "https://shop.example/validate"},
                {"id": "charge", "url": "https://shop.example/charge", "dependsOn": ["validate"]},
            ],
        }
    )
    document = await harness.wait(workflow_id)
    assert document["status"] == "completed"
    [request] = harness.requests("/charge")
    # Every configured secret signs; a Standard Webhooks library verifies with either.
    for secret in (SECRET, OLD_SECRET):
        Webhook(secret).verify(request.content, dict(request.headers))
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    assert request.headers["baton-workflow-id"] == "order-123"
    assert request.headers["baton-step-id"] == "charge"
    assert request.headers["baton-attempt"] == "1"
    assert request.headers["baton-kind"] == "step"
    assert request.headers["user-agent"] == f"Baton/{__version__}"
    assert request.headers["content-type"] == "application/json"
    body = orjson.loads(request.content)
    assert set(body) == {
        "workflowId",
        "workflowName",
        "stepId",
        "attempt",
        "kind",
        "context",
        "previousSteps",
        "deadline",
        "callbackUrl",
    }
    assert body["workflowId"] == "order-123"
    assert body["workflowName"] == "order-processing"
    assert body["stepId"] == "charge"
    assert body["attempt"] == 1
    assert body["kind"] == "step"
    assert body["context"] == {"orderId": "order_123"}
    assert body["previousSteps"] == {"validate": {"status": "completed", "result": {"total": 4200}}}
    assert body["deadline"].endswith("Z")
    datetime.fromisoformat(body["deadline"].replace("Z", "+00:00"))
    assert body["callbackUrl"] == "http://baton.test/v1/callbacks/order-123.charge"


@pytest.mark.parametrize(
    ("response", "status", "result", "error_code"),
    [
        (ok({"x": 1}), "completed", {"x": 1}, None),
        (httpx.Response(200, json={"plain": True}), "completed", {"plain": True}, None),
        (httpx.Response(200, text="not json"), "completed", None, None),
        (httpx.Response(204), "completed", None, None),
        (
            httpx.Response(200, json={"success": False, "error": "no", "retry": False}),
            "failed",
            None,
            "handler_error",
        ),
        (httpx.Response(404), "failed", None, "http_error"),
        (
            httpx.Response(302, headers={"Location": "https://elsewhere.example/"}),
            "failed",
            None,
            "http_error",
        ),
    ],
)
async def test_answer_table(
    harness: Harness, response: httpx.Response, status: str, result: Any, error_code: str | None
) -> None:
    harness.router.post("https://h.example/a").mock(return_value=response)
    workflow_id = await harness.create({"steps": [{"id": "a", "url": "https://h.example/a"}]})
    document = await harness.wait(workflow_id)
    [step] = document["steps"]
    assert step["status"] == status
    assert step["result"] == result
    assert step["attempts"] == 1
    if error_code:
        assert step["error"]["code"] == error_code
        assert document["status"] == "failed"
    else:
        assert document["status"] == "completed"


async def test_retries_wait_for_stored_due_times_and_keep_webhook_id(harness: Harness) -> None:
    harness.router.post("https://h.example/flaky").mock(
        side_effect=[httpx.Response(503), httpx.Response(500), ok("third time")]
    )
    workflow_id = await harness.create(
        {
            "steps": [
                {
                    "id": "flaky",
                    "url": "https://h.example/flaky",
                    "retries": {
                        "maxAttempts": 3,
                        "backoff": "linear",
                        "delay": 0.2,
                        "jitter": False,
                    },
                }
            ]
        }
    )
    document = await harness.wait(workflow_id)
    assert document["status"] == "completed"
    assert document["results"] == {"flaky": "third time"}
    requests = harness.requests("/flaky")
    assert [r.headers["baton-attempt"] for r in requests] == ["1", "2", "3"]
    assert len({r.headers["webhook-id"] for r in requests}) == 1
    step = await harness.store.get_step(workflow_id, "flaky")
    assert step is not None
    log = step["attemptLog"]
    assert [a["httpStatus"] for a in log] == [503, 500, 200]
    starts = [datetime.fromisoformat(a["startedAt"].replace("Z", "+00:00")) for a in log]
    # linear: 0.2 s after the first failure, 0.4 s after the second.
    assert (starts[1] - starts[0]).total_seconds() >= 0.19
    assert (starts[2] - starts[1]).total_seconds() >= 0.39
    events = [e["type"] for e in await harness.store.list_events(workflow_id)]
    assert events.count("step.failed") == 2
    assert events.count("step.retrying") == 2
    assert events.count("step.started") == 3


async def test_retry_after_is_honoured(harness: Harness) -> None:
    harness.router.post("https://h.example/limited").mock(
        side_effect=[httpx.Response(429, headers={"Retry-After": "1"}), ok()]
    )
    workflow_id = await harness.create(
        {
            "steps": [
                {
                    "id": "limited",
                    "url": "https://h.example/limited",
                    "retries": {"delay": 0, "jitter": False},
                }
            ]
        }
    )
    await harness.wait(workflow_id)
    step = await harness.store.get_step(workflow_id, "limited")
    assert step is not None
    first, second = (
        datetime.fromisoformat(a["startedAt"].replace("Z", "+00:00")) for a in step["attemptLog"]
    )
    assert (second - first).total_seconds() >= 0.95


async def test_exhausted_retries_fail_the_workflow(harness: Harness) -> None:
    harness.router.post("https://h.example/down").mock(return_value=httpx.Response(500))
    harness.router.post("https://h.example/after").mock(return_value=ok())
    harness.router.post("https://h.example/failed-hook").mock(return_value=httpx.Response(200))
    workflow_id = await harness.create(
        {
            "steps": [
                {
                    "id": "down",
                    "url": "https://h.example/down",
                    "retries": {"maxAttempts": 2, "delay": 0, "jitter": False},
                },
                {"id": "after", "url": "https://h.example/after", "dependsOn": ["down"]},
            ],
            "onError": "https://h.example/failed-hook",
        }
    )
    document = await harness.wait(workflow_id)
    assert document["status"] == "failed"
    assert document["error"]["stepId"] == "down"
    assert len(harness.requests("/down")) == 2
    assert harness.requests("/after") == []
    [hook] = harness.requests("/failed-hook")
    assert hook.headers["baton-kind"] == "on_error"
    assert "baton-step-id" not in hook.headers
    payload = orjson.loads(hook.content)
    assert payload["status"] == "failed"
    assert payload["failedSteps"] == ["down"]
    assert payload["error"]["code"] == "step_failed"


async def test_callback_retries_never_change_the_workflow_status(harness: Harness) -> None:
    harness.router.post("https://h.example/a").mock(return_value=ok(1))
    harness.router.post("https://h.example/done").mock(
        side_effect=[httpx.Response(500), httpx.Response(502), httpx.Response(200)]
    )
    workflow_id = await harness.create(
        {
            "steps": [{"id": "a", "url": "https://h.example/a"}],
            "onComplete": "https://h.example/done",
        }
    )
    # Callback backoff is exponential from 1 s with full jitter: allow for two waits.
    document = await harness.wait(workflow_id, within=20)
    assert document["status"] == "completed"
    hooks = harness.requests("/done")
    assert len(hooks) == 3
    assert len({h.headers["webhook-id"] for h in hooks}) == 1
    assert [h.headers["baton-attempt"] for h in hooks] == ["1", "2", "3"]
    body = orjson.loads(hooks[0].content)
    assert set(body) == {
        "workflowId",
        "workflowName",
        "status",
        "context",
        "results",
        "completedSteps",
        "failedSteps",
        "skippedSteps",
        "error",
        "completedAt",
    }
    assert body["results"] == {"a": 1}
    types = [e["type"] for e in await harness.store.list_events(workflow_id)]
    assert types[-1] == "callback.delivered"


async def test_connection_errors_and_timeouts_are_retried(harness: Harness) -> None:
    calls: list[int] = []

    def flaky(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            raise httpx.ConnectError("connection refused", request=request)
        return ok("up")

    harness.router.post("https://h.example/c").mock(side_effect=flaky)
    workflow_id = await harness.create(
        {
            "steps": [
                {"id": "c", "url": "https://h.example/c", "retries": {"delay": 0, "jitter": False}}
            ]
        }
    )
    document = await harness.wait(workflow_id)
    assert document["status"] == "completed"
    step = await harness.store.get_step(workflow_id, "c")
    assert step is not None
    assert step["attemptLog"][0]["error"]["code"] == "connection_error"


async def test_refused_url_at_delivery_is_not_sent(harness: Harness) -> None:
    # Created while private networks were allowed, delivered by a process that refuses them.
    workflow_id = await harness.create({"steps": [{"id": "x", "url": "http://127.0.0.1:9/x"}]})
    document = await harness.wait(workflow_id)
    [step] = document["steps"]
    assert step["status"] == "failed"
    assert step["error"]["code"] == "connection_error"
    assert "loopback" in step["error"]["message"]
    assert len(harness.router.calls) == 0


async def test_fifty_workflows_at_once(harness: Harness) -> None:
    seen: dict[str, list[str]] = {}

    def record(request: httpx.Request) -> httpx.Response:
        body = orjson.loads(request.content)
        seen.setdefault(body["workflowId"], []).append(body["stepId"])
        return ok(body["stepId"])

    harness.router.post(url__regex=r"https://h\.example/.*").mock(side_effect=record)
    ids = [
        await harness.create(
            {
                "steps": [
                    {"id": "start", "url": "https://h.example/s"},
                    {"id": "a", "url": "https://h.example/a", "dependsOn": ["start"]},
                    {"id": "b", "url": "https://h.example/b", "dependsOn": ["start"]},
                    {"id": "merge", "url": "https://h.example/m", "dependsOn": ["a", "b"]},
                ]
            }
        )
        for _ in range(50)
    ]
    for workflow_id in ids:
        assert (await harness.wait(workflow_id))["status"] == "completed"
        order = seen[workflow_id]
        assert sorted(order) == ["a", "b", "merge", "start"]
        assert order[0] == "start" and order[-1] == "merge"


async def test_reserved_slots_are_bounded_by_the_free_ones_and_the_limit(harness: Harness) -> None:
    # A dispatcher of its own, not started: no claim loop holds slots meanwhile.
    dispatcher = Dispatcher(
        harness.store, harness.dispatcher.deliverer, max_concurrency=16, lease_seconds=30
    )
    assert dispatcher.reserve(limit=3) == 3
    assert dispatcher.reserve() == 13  # 16 slots, 3 reserved
    assert dispatcher.reserve(limit=1) == 0
    dispatcher.release(13)
    dispatcher.release(3)
    assert dispatcher.reserve(limit=20) == 16
    dispatcher.release(16)


class _Chunks(httpx.AsyncByteStream):
    """An answer body sent in 64 KiB pieces, as a server writes a large answer."""

    def __init__(self, size: int) -> None:
        self.size = size

    async def __aiter__(self) -> AsyncIterator[bytes]:
        prefix = b'{"success": true, "result": "'
        yield prefix
        left = self.size - len(prefix) - 2
        while left > 0:
            piece = min(left, 65536)
            yield b"x" * piece
            left -= piece
        yield b'"}'


@pytest.mark.parametrize(
    ("declared", "said"),
    [(True, "the answer is 5242880 bytes"), (False, "the answer is more than 1048576 bytes")],
)
async def test_a_result_too_large_reports_the_real_size(declared: bool, said: str) -> None:
    size = 5 * 1024 * 1024

    def answer(request: httpx.Request) -> httpx.Response:
        headers = {"Content-Type": "application/json"}
        if declared:
            headers["Content-Length"] = str(size)
        return httpx.Response(200, headers=headers, stream=_Chunks(size))

    deliverer = Deliverer(
        signer=Signer([SECRET]),
        policy=NetPolicy(allow_private=False),
        callback_url=lambda request: None,
        max_connections=1,
        transport=httpx.MockTransport(answer),
    )
    request = OutboundRequest(
        delivery_id=1,
        workflow_id="w",
        workflow_name=None,
        kind=DeliveryKind.STEP,
        step_id="a",
        attempt=1,
        message_id="msg_1",
        url="https://handler.example/a",
        timeout=10.0,
        policy=RetryPolicy(),
    )
    try:
        report = await deliverer.send(request)
    finally:
        await deliverer.aclose()
    error = report.result.error
    assert error is not None and error.code is StepErrorCode.RESULT_TOO_LARGE
    assert error.message == f"{said}; results are limited to 1048576 bytes"
