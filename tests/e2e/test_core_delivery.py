"""Core delivery over real processes: what the handler receives and what the API reports."""

from __future__ import annotations

import asyncio
import re
import time
from itertools import pairwise
from typing import Any

import httpx
import pytest
from contract import (
    assert_callback_request,
    assert_problem,
    assert_status_document,
    assert_step_request,
    parse_utc,
    steps_by_id,
    unique_id,
)
from harness import BatonClient, BatonServer, HandlerClient

#: Generous: the machine has two cores and other suites may run alongside.
WAIT = 30.0
CALLBACK_WAIT = 90.0


def default_result(handler: HandlerClient, name: str, attempt: int = 1) -> dict[str, Any]:
    """What the handler app answers unscripted, as Baton stores it."""
    return {"step": handler.name(name), "attempt": attempt}


def step(handler: HandlerClient, step_id: str, *depends_on: str, **extra: Any) -> dict[str, Any]:
    """A step whose URL is the handler's ``/steps/<step_id>``."""
    body: dict[str, Any] = {"id": step_id, "url": handler.step_url(step_id)}
    if depends_on:
        body["dependsOn"] = list(depends_on)
    return body | extra


def by_name(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The only request each name received."""
    names = [r["name"] for r in records]
    assert len(names) == len(set(names)), f"some step was called twice: {names}"
    return {r["name"]: r for r in records}


def delivered(events: list[dict[str, Any]]) -> bool:
    return any(e["type"] == "callback.delivered" for e in events)


def test_chain_runs_in_order(
    api: BatonClient, handler: HandlerClient, baton: BatonServer, signing_secret: str
) -> None:
    wid = unique_id("chain")
    context = {"orderId": "o-1", "total": 4200}
    created = api.create(
        {
            "id": wid,
            "name": "chain",
            "context": context,
            "steps": [
                step(handler, "a"),
                step(handler, "b", "a"),
                step(handler, "c", "b"),
            ],
        }
    )
    assert created["id"] == wid
    assert created["status"] in {"pending", "running", "completed"}
    assert_status_document(created)

    document = api.wait_status(wid, "completed", WAIT)

    records = handler.requests(workflow_id=wid)
    assert [r["name"] for r in records] == ["a", "b", "c"]
    for earlier, later in pairwise(records):
        assert later["received_mono"] >= earlier["ended_mono"]
    bodies = [
        assert_step_request(
            record,
            signing_secret,
            workflow_id=wid,
            step_id=record["name"],
            public_url=baton.url,
            workflow_name="chain",
            context=context,
        )
        for record in records
    ]
    assert bodies[0]["previousSteps"] == {}
    assert set(bodies[1]["previousSteps"]) == {"a"}
    assert set(bodies[2]["previousSteps"]) == {"a", "b"}
    for name in ("a", "b"):
        previous = bodies[2]["previousSteps"][name]
        assert previous["status"] == "completed"
        assert previous["result"] == default_result(handler, name)
    assert len({r["headers"]["webhook-id"] for r in records}) == 3

    assert_status_document(document)
    assert document["id"] == wid
    assert document["name"] == "chain"
    assert document["context"] == context
    assert (document["saga"], document["failFast"], document["timeout"]) == (False, True, 86400)
    assert document["completedSteps"] == ["a", "b", "c"]
    assert document["currentSteps"] == []
    assert document["failedSteps"] == []
    assert document["skippedSteps"] == []
    assert document["error"] is None
    assert document["results"] == {n: default_result(handler, n) for n in ("a", "b", "c")}
    created_at = parse_utc(document["createdAt"])
    started_at = parse_utc(document["startedAt"])
    completed_at = parse_utc(document["completedAt"])
    assert created_at <= started_at <= completed_at
    assert [s["id"] for s in document["steps"]] == ["a", "b", "c"]
    for item, depends_on in zip(document["steps"], ([], ["a"], ["b"]), strict=True):
        assert item["status"] == "completed"
        assert item["attempts"] == 1
        assert item["maxAttempts"] == 3
        assert item["dependsOn"] == depends_on
        assert item["url"] == handler.step_url(item["id"])
        assert item["result"] == default_result(handler, item["id"])
        assert item["error"] is None
        assert item["compensation"] is None
        assert item["compensationStatus"] is None
        assert started_at <= parse_utc(item["startedAt"]) <= parse_utc(item["completedAt"])
    for earlier, later in pairwise(document["steps"]):
        assert parse_utc(earlier["completedAt"]) <= parse_utc(later["startedAt"])


def test_parallel_steps_overlap_and_the_join_sees_all_of_them(
    api: BatonClient, handler: HandlerClient, baton: BatonServer, signing_secret: str
) -> None:
    wid = unique_id("fan")
    handler.script({name: [{"delay": 1}] for name in ("p1", "p2", "p3")})
    api.create(
        {
            "id": wid,
            "context": {"fan": "out"},
            "steps": [
                step(handler, "p1"),
                step(handler, "p2", parallel=True),
                step(handler, "p3"),
                step(handler, "join", "p1", "p2", "p3"),
            ],
        }
    )

    document = api.wait_status(wid, "completed", WAIT)

    records = by_name(handler.requests(workflow_id=wid))
    assert set(records) == {"p1", "p2", "p3", "join"}
    branches = [records[name] for name in ("p1", "p2", "p3")]
    # Each started before any other ended: all three were in flight at once.
    assert max(r["received_mono"] for r in branches) < min(r["ended_mono"] for r in branches)
    assert records["join"]["received_mono"] >= max(r["ended_mono"] for r in branches)
    join = assert_step_request(
        records["join"],
        signing_secret,
        workflow_id=wid,
        step_id="join",
        public_url=baton.url,
        context={"fan": "out"},
    )
    assert set(join["previousSteps"]) == {"p1", "p2", "p3"}
    for name in ("p1", "p2", "p3"):
        assert join["previousSteps"][name]["status"] == "completed"
        assert join["previousSteps"][name]["result"] == default_result(handler, name)
    assert sorted(document["completedSteps"][:3]) == ["p1", "p2", "p3"]
    assert document["completedSteps"][3] == "join"
    assert all(s["attempts"] == 1 for s in document["steps"])


def test_previous_steps_are_the_transitive_ancestors_only(
    api: BatonClient, handler: HandlerClient, baton: BatonServer, signing_secret: str
) -> None:
    wid = unique_id("diamond")
    context = {"k": [1, 2, 3]}
    api.create(
        {
            "id": wid,
            "name": "diamond",
            "context": context,
            "steps": [
                step(handler, "start"),
                step(handler, "left", "start"),
                step(handler, "right", "start"),
                step(handler, "merge", "left", "right"),
                step(handler, "x"),
                step(handler, "y", "x"),
            ],
        }
    )

    document = api.wait_status(wid, "completed", WAIT)

    records = by_name(handler.requests(workflow_id=wid))
    bodies = {
        name: assert_step_request(
            record,
            signing_secret,
            workflow_id=wid,
            step_id=name,
            public_url=baton.url,
            workflow_name="diamond",
            context=context,
        )
        for name, record in records.items()
    }
    ancestors = {
        "start": set(),
        "left": {"start"},
        "right": {"start"},
        "merge": {"start", "left", "right"},
        "x": set(),
        "y": {"x"},
    }
    assert {name: set(body["previousSteps"]) for name, body in bodies.items()} == ancestors
    for name, body in bodies.items():
        for ancestor, entry in body["previousSteps"].items():
            assert entry["status"] == "completed", (name, ancestor, entry)
            assert entry["result"] == default_result(handler, ancestor)
    for name, before in ancestors.items():
        for ancestor in before:
            assert records[name]["received_mono"] >= records[ancestor]["ended_mono"]
    assert sorted(document["completedSteps"]) == sorted(ancestors)

    assert api.dependencies(wid, "merge") == {"dependsOn": ["left", "right"], "dependedOnBy": []}
    start = api.dependencies(wid, "start")
    assert start["dependsOn"] == []
    assert sorted(start["dependedOnBy"]) == ["left", "right"]
    assert api.dependencies(wid, "x") == {"dependsOn": [], "dependedOnBy": ["y"]}
    missing = api.http.get(f"/v1/workflows/{wid}/steps/nope/dependencies")
    assert_problem(missing, 404)


def test_on_complete_is_called_once_and_signed(
    api: BatonClient, handler: HandlerClient, signing_secret: str
) -> None:
    wid = unique_id("done")
    context = {"orderId": "o-2"}
    api.create(
        {
            "id": wid,
            "name": "hooks",
            "context": context,
            "steps": [step(handler, "a"), step(handler, "b", "a")],
            "onComplete": handler.hook_url("done"),
            "onError": handler.hook_url("failed"),
        }
    )

    document = api.wait_status(wid, "completed", WAIT)
    api.wait_events(wid, delivered, CALLBACK_WAIT)

    [hook] = handler.requests("done")
    body = assert_callback_request(
        hook, signing_secret, workflow_id=wid, kind="on_complete", status="completed"
    )
    assert body["workflowName"] == "hooks"
    assert body["context"] == context
    assert body["results"] == {"a": default_result(handler, "a"), "b": default_result(handler, "b")}
    assert body["results"] == document["results"]
    assert body["completedSteps"] == ["a", "b"]
    assert body["failedSteps"] == []
    assert body["skippedSteps"] == []
    assert body["error"] is None
    gap = parse_utc(body["completedAt"]) - parse_utc(document["completedAt"])
    assert abs(gap.total_seconds()) < 1
    assert handler.requests("failed") == []
    assert api.get(wid)["status"] == "completed"


def test_failing_on_complete_is_retried_without_changing_the_status(
    api: BatonClient, handler: HandlerClient, signing_secret: str
) -> None:
    wid = unique_id("retry-hook")
    handler.script(done=[{"status": 500}, {"status": 500}, {"status": 200, "json": {}}])
    api.create(
        {
            "id": wid,
            "steps": [step(handler, "a")],
            "onComplete": handler.hook_url("done"),
        }
    )
    api.wait_status(wid, "completed", WAIT)

    deadline = time.monotonic() + CALLBACK_WAIT
    while len(handler.requests("done")) < 3 or not delivered(api.events(wid)):
        assert api.get(wid)["status"] == "completed"
        assert time.monotonic() < deadline, handler.requests("done")
        time.sleep(0.2)

    hooks = handler.requests("done")
    assert [r["response_status"] for r in hooks] == [500, 500, 200]
    for attempt, hook in enumerate(hooks, start=1):
        assert_callback_request(
            hook,
            signing_secret,
            workflow_id=wid,
            kind="on_complete",
            status="completed",
            attempt=attempt,
        )
    assert len({r["headers"]["webhook-id"] for r in hooks}) == 1
    assert api.get(wid)["status"] == "completed"


def test_a_4xx_fails_the_step_at_once_and_calls_on_error(
    api: BatonClient, handler: HandlerClient, signing_secret: str
) -> None:
    wid = unique_id("fail")
    handler.script(a=[{"status": 404, "json": {"detail": "no such order"}}])
    api.create(
        {
            "id": wid,
            "name": "failing",
            "context": {"n": 1},
            "steps": [
                step(handler, "a", retries={"maxAttempts": 3, "delay": 0.1, "jitter": False}),
                step(handler, "b", "a"),
            ],
            "onComplete": handler.hook_url("done"),
            "onError": handler.hook_url("failed"),
        }
    )

    document = api.wait_status(wid, "failed", WAIT)
    api.wait_events(wid, delivered, CALLBACK_WAIT)

    assert [r["name"] for r in handler.requests(kind="steps")] == ["a"]
    assert_status_document(document)
    assert document["error"]["code"] == "step_failed"
    assert document["error"]["stepId"] == "a"
    assert isinstance(document["error"]["message"], str)
    assert document["failedSteps"] == ["a"]
    assert document["completedSteps"] == []
    steps = steps_by_id(document)
    assert steps["a"]["status"] == "failed"
    assert steps["a"]["attempts"] == 1
    assert steps["a"]["error"]["code"] == "http_error"
    assert steps["a"]["error"]["httpStatus"] == 404
    assert steps["b"]["status"] == "cancelled"
    assert steps["b"]["attempts"] == 0

    [hook] = handler.requests("failed")
    body = assert_callback_request(
        hook, signing_secret, workflow_id=wid, kind="on_error", status="failed"
    )
    assert body["error"]["code"] == "step_failed"
    assert body["error"]["stepId"] == "a"
    assert body["failedSteps"] == ["a"]
    assert body["completedSteps"] == []
    assert body["context"] == {"n": 1}
    assert handler.requests("done") == []


def test_retryable_answers_are_retried_with_the_same_webhook_id(
    api: BatonClient, handler: HandlerClient, baton: BatonServer, signing_secret: str
) -> None:
    wid = unique_id("retry")
    delay = 0.2
    handler.script(a=[{"status": 503}, {"status": 503}, {"status": 200}])
    api.create(
        {
            "id": wid,
            "context": {"try": "again"},
            "steps": [
                step(
                    handler,
                    "a",
                    retries={"maxAttempts": 3, "delay": delay, "backoff": "fixed", "jitter": False},
                )
            ],
        }
    )

    document = api.wait_status(wid, "completed", WAIT)

    records = handler.requests("a")
    assert [r["response_status"] for r in records] == [503, 503, 200]
    for attempt, record in enumerate(records, start=1):
        assert_step_request(
            record,
            signing_secret,
            workflow_id=wid,
            step_id="a",
            public_url=baton.url,
            attempt=attempt,
            context={"try": "again"},
        )
    assert len({r["headers"]["webhook-id"] for r in records}) == 1
    for earlier, later in pairwise(records):
        assert later["received_mono"] - earlier["ended_mono"] >= delay * 0.9
    [item] = document["steps"]
    assert item["status"] == "completed"
    assert item["attempts"] == 3
    assert item["result"] == default_result(handler, "a", attempt=3)
    detail = api.step(wid, "a")
    assert [entry["httpStatus"] for entry in detail["attemptLog"]] == [503, 503, 200]
    failures = [e for e in api.events(wid) if e["type"] == "step.failed"]
    assert len(failures) == 2


def test_success_false_is_retried_unless_retry_is_false(
    api: BatonClient, handler: HandlerClient
) -> None:
    wid = unique_id("handler-error")
    retries = {"maxAttempts": 3, "delay": 0.1, "backoff": "fixed", "jitter": False}
    handler.script(
        once=[{"json": {"success": False, "error": "busy"}}, {"status": 200}],
        never=[{"json": {"success": False, "error": "card declined", "retry": False}}],
    )
    api.create(
        {
            "id": wid,
            "failFast": False,
            "steps": [
                step(handler, "once", retries=retries),
                step(handler, "never", retries=retries),
            ],
        }
    )

    document = api.wait_status(wid, "failed", WAIT)

    assert [r["name"] for r in handler.requests()].count("once") == 2
    assert [r["name"] for r in handler.requests()].count("never") == 1
    steps = steps_by_id(document)
    assert steps["once"]["status"] == "completed"
    assert steps["once"]["attempts"] == 2
    assert steps["once"]["result"] == default_result(handler, "once", attempt=2)
    assert steps["never"]["status"] == "failed"
    assert steps["never"]["attempts"] == 1
    assert steps["never"]["error"]["code"] == "handler_error"
    assert steps["never"]["error"]["message"] == "card declined"
    assert document["error"]["code"] == "step_failed"
    assert document["error"]["stepId"] == "never"


def test_answer_table(api: BatonClient, handler: HandlerClient) -> None:
    wid = unique_id("answers")
    handler.script(
        text=[{"status": 200, "body": "ok, done"}],
        plain=[{"status": 200, "json": {"total": 42, "items": ["x"]}}],
        listed=[{"status": 201, "json": [1, 2, 3]}],
        empty=[{"status": 204}],
        wrapped=[{"status": 200, "json": {"success": True, "result": "charged"}}],
    )
    names = ["text", "plain", "listed", "empty", "wrapped"]
    api.create({"id": wid, "steps": [step(handler, name) for name in names]})

    document = api.wait_status(wid, "completed", WAIT)

    assert sorted(r["name"] for r in handler.requests()) == sorted(names)
    expected = {
        "text": None,
        "plain": {"total": 42, "items": ["x"]},
        "listed": [1, 2, 3],
        "empty": None,
        "wrapped": "charged",
    }
    steps = steps_by_id(document)
    assert {name: steps[name]["result"] for name in names} == expected
    assert all(steps[name]["status"] == "completed" for name in names)
    assert all(steps[name]["attempts"] == 1 for name in names)
    assert {name: document["results"].get(name) for name in names} == expected


@pytest.mark.slow
async def test_fifty_workflows_at_once(api: BatonClient, handler: HandlerClient) -> None:
    prefix = unique_id("many")
    ids = [f"{prefix}-{n:02d}" for n in range(50)]
    parents = {"s": [], "l": ["s"], "r": ["s"], "m": ["l", "r"]}

    async with api.async_client() as client:

        async def create(wid: str) -> None:
            body = {"id": wid, "steps": [step(handler, s, *deps) for s, deps in parents.items()]}
            response = await client.post("/v1/workflows", json=body)
            assert response.status_code == 201, response.text

        async def finished(wid: str) -> dict[str, Any]:
            deadline = time.monotonic() + 180
            while True:
                response = await client.get(f"/v1/workflows/{wid}")
                document = response.json()
                if document["status"] == "completed":
                    return document
                assert document["status"] in {"pending", "running"}, document
                assert time.monotonic() < deadline, document
                await asyncio.sleep(0.25)

        await asyncio.gather(*(create(wid) for wid in ids))
        documents = await asyncio.gather(*(finished(wid) for wid in ids))

    assert all(d["status"] == "completed" for d in documents)
    records = await asyncio.to_thread(handler.requests)
    calls: dict[str, list[dict[str, Any]]] = {wid: [] for wid in ids}
    for record in records:
        calls[record["headers"]["baton-workflow-id"]].append(record)
    for wid in ids:
        received = by_name(calls[wid])
        assert set(received) == set(parents), (wid, sorted(received))
        for name, deps in parents.items():
            for dep in deps:
                assert received[name]["received_mono"] >= received[dep]["ended_mono"], (wid, name)


def test_requests_without_the_right_key_are_refused(baton: BatonServer) -> None:
    with httpx.Client(base_url=baton.url, timeout=10) as client:
        assert_problem(client.get("/v1/workflows"), 401)
        wrong = {"Authorization": "Bearer not-the-key"}
        assert_problem(client.get("/v1/workflows", headers=wrong), 401)
        assert_problem(client.post("/v1/workflows", json={"steps": []}, headers=wrong), 401)
        assert client.get("/healthz").status_code == 200


def test_a_cycle_is_refused_with_its_path(api: BatonClient, handler: HandlerClient) -> None:
    body = {"steps": [step(handler, "a", "b"), step(handler, "b", "a")]}

    problem = assert_problem(api.http.post("/v1/workflows", json=body), 422)

    messages = [problem.get("detail") or ""] + [e["message"] for e in problem["errors"]]
    assert any(re.search(r"cycle: (a -> b -> a|b -> a -> b)", m) for m in messages), problem
    assert_problem(api.http.get("/v1/workflows/does-not-exist"), 404)


def test_create_with_an_id_is_idempotent(api: BatonClient, handler: HandlerClient) -> None:
    wid = unique_id("idem")
    body = {"id": wid, "context": {"v": 1}, "steps": [step(handler, "a")]}

    first = api.create(body)
    again = api.create(body, expect=200)
    conflict = api.http.post("/v1/workflows", json=body | {"context": {"v": 2}})

    assert again["id"] == first["id"] == wid
    assert again["createdAt"] == first["createdAt"]
    assert_problem(conflict, 409)
    api.wait_status(wid, "completed", WAIT)
    assert len(handler.requests("a")) == 1
    assert api.create(body, expect=200)["status"] == "completed"


def test_list_pages_newest_first(api: BatonClient, handler: HandlerClient) -> None:
    name = unique_id("listed")
    ids = []
    for n in range(3):
        wid = f"{name}-{n}"
        api.create({"id": wid, "name": name, "steps": [step(handler, "a")]})
        api.wait_status(wid, "completed", WAIT)
        ids.append(wid)

    first = api.list_workflows(status="completed", name=name, limit=2)
    assert [item["id"] for item in first["items"]] == [ids[2], ids[1]]
    assert all(item["status"] == "completed" for item in first["items"])
    assert first["nextCursor"]
    second = api.list_workflows(status="completed", name=name, limit=2, cursor=first["nextCursor"])
    assert [item["id"] for item in second["items"]] == [ids[0]]
    assert second["nextCursor"] is None
    assert api.list_workflows(status="failed", name=name)["items"] == []


def test_events_of_a_one_step_workflow(api: BatonClient, handler: HandlerClient) -> None:
    wid = unique_id("events")
    api.create({"id": wid, "steps": [step(handler, "a")], "onComplete": handler.hook_url("done")})
    api.wait_status(wid, "completed", WAIT)

    events = api.wait_events(wid, delivered, CALLBACK_WAIT)

    types = [e["type"] for e in events]
    assert types[:5] == [
        "workflow.created",
        "workflow.started",
        "step.started",
        "step.completed",
        "workflow.completed",
    ]
    assert types[5:] == ["callback.delivered"], types
    for event in events:
        assert set(event) >= {"id", "type", "workflowId", "stepId", "at", "data"}
        assert event["workflowId"] == wid
        assert event["stepId"] == ("a" if event["type"].startswith("step.") else None)
    times = [parse_utc(e["at"]) for e in events]
    assert times == sorted(times)
    assert len({e["id"] for e in events}) == len(events)
