"""Saga compensation over real processes."""

from __future__ import annotations

from itertools import pairwise

import pytest
from contract import (
    STEP_BODY_FIELDS,
    assert_problem,
    assert_signed,
    parse_utc,
    steps_by_id,
    unique_id,
)
from harness import BatonClient, HandlerClient
from helpers_failure import (
    CALLBACK_WAIT,
    WAIT,
    assert_never_called,
    compensation_statuses,
    default_result,
    ended,
    fixed,
    has_event,
    hooks_with_status,
    once,
    statuses,
    step,
    types,
)

COMPENSATION_BODY_FIELDS = STEP_BODY_FIELDS | {"compensating"}


def undo(handler: HandlerClient, step_id: str) -> str:
    return handler.step_url(f"undo_{step_id}")


def assert_compensation_request(
    record: dict,
    secret: str,
    *,
    workflow_id: str,
    step_id: str,
    result: object,
    attempt: int = 1,
) -> dict:
    """A signed compensation request as DESIGN §4 describes it; returns the body."""
    headers = assert_signed(
        record, secret, kind="compensation", workflow_id=workflow_id, attempt=attempt
    )
    assert headers.get("baton-step-id") == step_id
    body = record["json"]
    assert body["kind"] == "compensation"
    assert body["workflowId"] == workflow_id
    assert body["stepId"] == step_id
    assert set(body) >= STEP_BODY_FIELDS, sorted(STEP_BODY_FIELDS - set(body))
    assert "compensating" in body, f"no 'compensating' in the compensation body: {sorted(body)}"
    assert set(body) == COMPENSATION_BODY_FIELDS, sorted(body)
    assert body["compensating"] == {"stepId": step_id, "result": result}
    return body


def compensations(handler: HandlerClient) -> list[dict]:
    return [r for r in handler.requests(kind="steps") if r["name"].startswith("undo_")]


@pytest.mark.slow
def test_compensation_runs_in_reverse_completion_order_including_late_branches(
    api: BatonClient, handler: HandlerClient, signing_secret: str
) -> None:
    wid = unique_id("saga")
    handler.script(
        f=[{"status": 404, "json": {"detail": "no"}}],
        slow=[{"delay": 2.5, "json": {"success": True, "result": {"late": True}}}],
    )
    api.create(
        {
            "id": wid,
            "saga": True,
            "context": {"order": 1},
            "onError": handler.hook_url("failed"),
            "onComplete": handler.hook_url("done"),
            "steps": [
                step(handler, "a", compensation=undo(handler, "a")),
                step(handler, "b", "a", compensation=undo(handler, "b")),
                step(handler, "f", "b", compensation=undo(handler, "f"), retries=once()),
                step(handler, "slow", compensation=undo(handler, "slow")),
                step(handler, "after_slow", "slow", compensation=undo(handler, "after_slow")),
                step(handler, "plain"),
            ],
        }
    )

    document = api.wait_status(wid, "compensated", WAIT)

    [f] = handler.requests("f")
    [slow] = handler.wait_for(ended, name="slow")
    # The premise: the slow branch completed after the failure.
    assert slow["ended_mono"] > f["ended_mono"]
    undos = compensations(handler)
    assert [r["name"] for r in undos] == ["undo_slow", "undo_b", "undo_a"]
    # One at a time, and only once nothing ran any more.
    assert undos[0]["received_mono"] >= slow["ended_mono"]
    for earlier, later in pairwise(undos):
        assert later["received_mono"] >= earlier["ended_mono"]
    expected = {
        "slow": {"late": True},
        "b": default_result(handler, "b"),
        "a": default_result(handler, "a"),
    }
    for record in undos:
        step_id = record["name"].removeprefix("undo_")
        body = assert_compensation_request(
            record, signing_secret, workflow_id=wid, step_id=step_id, result=expected[step_id]
        )
        assert body["context"] == {"order": 1}

    assert statuses(document) == {
        "a": "completed",
        "b": "completed",
        "f": "failed",
        "slow": "completed",
        "after_slow": "cancelled",
        "plain": "completed",
    }
    assert compensation_statuses(document) == {
        "a": "completed",
        "b": "completed",
        "f": None,
        "slow": "completed",
        "after_slow": None,
        "plain": None,
    }
    assert document["error"]["code"] == "step_failed"
    assert document["error"]["stepId"] == "f"
    assert_never_called(handler, "undo_f", quiet=0)
    assert_never_called(handler, "after_slow", quiet=0)
    assert handler.requests("undo_after_slow") == []

    [hook] = handler.wait_for(lambda r: len(r) >= 1, CALLBACK_WAIT, name="failed")
    assert hook["headers"]["baton-kind"] == "on_error"
    assert hook["json"]["status"] == "compensated"
    assert hook["json"]["error"]["code"] == "step_failed"
    assert hook["received_mono"] >= undos[-1]["ended_mono"]
    assert handler.requests("done") == []

    events = api.events(wid)
    done = [e["stepId"] for e in events if e["type"] == "compensation.completed"]
    assert done == ["slow", "b", "a"]
    assert parse_utc(document["completedAt"]) >= parse_utc(
        steps_by_id(document)["slow"]["completedAt"]
    )

    # A compensated workflow is finished.
    for action in ("cancel", "retry", "steps/a/retry"):
        assert_problem(api.http.post(f"/v1/workflows/{wid}/{action}"), 409)
    assert api.get(wid)["status"] == "compensated"


def test_compensation_retries_with_the_step_policy(
    api: BatonClient, handler: HandlerClient
) -> None:
    wid = unique_id("saga-retry")
    handler.script(f=[{"status": 404}], undo_a=[{"status": 503}, {"status": 200}])
    api.create(
        {
            "id": wid,
            "saga": True,
            "steps": [
                step(handler, "a", compensation=undo(handler, "a"), retries=fixed(0.1, 3)),
                step(handler, "f", "a", retries=once()),
            ],
        }
    )

    document = api.wait_status(wid, "compensated", WAIT)

    records = handler.requests("undo_a")
    assert [r["response_status"] for r in records] == [503, 200]
    assert [r["headers"]["baton-attempt"] for r in records] == ["1", "2"]
    assert all(r["headers"]["baton-kind"] == "compensation" for r in records)
    assert compensation_statuses(document)["a"] == "completed"


def test_a_failed_compensation_waits_for_retry(
    api: BatonClient, handler: HandlerClient, signing_secret: str
) -> None:
    wid = unique_id("saga-fail")
    handler.script(f=[{"status": 404}], undo_b=[{"status": 500}])
    api.create(
        {
            "id": wid,
            "saga": True,
            "onError": handler.hook_url("failed"),
            "steps": [
                step(handler, "a", compensation=undo(handler, "a")),
                step(handler, "b", "a", compensation=undo(handler, "b"), retries=once()),
                step(handler, "f", "b", retries=once()),
            ],
        }
    )

    stuck = api.wait_status(wid, "compensation_failed", WAIT)

    assert [r["name"] for r in compensations(handler)] == ["undo_b"]
    assert compensation_statuses(stuck) == {"a": "pending", "b": "failed", "f": None}
    assert statuses(stuck) == {"a": "completed", "b": "completed", "f": "failed"}
    [hook] = handler.wait_for(lambda r: len(r) >= 1, CALLBACK_WAIT, name="failed")
    assert hook["json"]["status"] == "compensation_failed"
    events = api.events(wid)
    assert [e["stepId"] for e in events if e["type"] == "compensation.failed"] == ["b"]
    assert "workflow.compensation_failed" in types(events)
    assert_never_called(handler, "undo_a", quiet=0.5)
    assert_problem(api.http.post(f"/v1/workflows/{wid}/steps/a/retry"), 409)
    assert_problem(api.http.post(f"/v1/workflows/{wid}/cancel"), 409)

    handler.script(undo_b=[{"status": 200}])
    response = api.http.post(f"/v1/workflows/{wid}/retry")

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "compensating"
    document = api.wait_status(wid, "compensated", WAIT)
    assert [r["name"] for r in compensations(handler)] == ["undo_b", "undo_b", "undo_a"]
    _, second, last = compensations(handler)
    assert last["received_mono"] >= second["ended_mono"]
    assert_compensation_request(
        last, signing_secret, workflow_id=wid, step_id="a", result=default_result(handler, "a")
    )
    assert compensation_statuses(document) == {"a": "completed", "b": "completed", "f": None}
    assert document["error"]["code"] == "step_failed"
    events = api.wait_events(wid, has_event("workflow.compensated"))
    assert [e["stepId"] for e in events if e["type"] == "compensation.completed"] == ["b", "a"]
    handler.wait_for(
        lambda _: hooks_with_status(handler, "failed", "compensated"), CALLBACK_WAIT, name="failed"
    )
    assert_problem(api.http.post(f"/v1/workflows/{wid}/retry"), 409)


def test_saga_events_come_in_order(api: BatonClient, handler: HandlerClient) -> None:
    wid = unique_id("saga-events")
    handler.script(f=[{"status": 404}])
    api.create(
        {
            "id": wid,
            "saga": True,
            "steps": [
                step(handler, "a", compensation=undo(handler, "a")),
                step(handler, "b", "a", compensation=undo(handler, "b")),
                step(handler, "f", "b", retries=once()),
            ],
        }
    )
    api.wait_status(wid, "compensated", WAIT)

    events = api.wait_events(wid, has_event("workflow.compensated"))

    wanted = {
        "workflow.created",
        "workflow.started",
        "step.completed",
        "step.failed",
        "workflow.compensating",
        "compensation.completed",
        "compensation.failed",
        "workflow.compensated",
        "workflow.compensation_failed",
    }
    seen = [(e["type"], e["stepId"]) for e in events if e["type"] in wanted]
    assert seen == [
        ("workflow.created", None),
        ("workflow.started", None),
        ("step.completed", "a"),
        ("step.completed", "b"),
        ("step.failed", "f"),
        ("workflow.compensating", None),
        ("compensation.completed", "b"),
        ("compensation.completed", "a"),
        ("workflow.compensated", None),
    ]
    assert all(e["workflowId"] == wid for e in events)
    times = [parse_utc(e["at"]) for e in events]
    assert times == sorted(times)
    assert len({e["id"] for e in events}) == len(events)
    # Whatever else is emitted, the workflow's own end comes after every step event.
    last_step_event = max(i for i, e in enumerate(events) if e["type"].startswith("step."))
    assert types(events).index("workflow.compensating") > last_step_event


@pytest.mark.slow
def test_a_workflow_timeout_is_compensated_in_saga_mode(
    api: BatonClient, handler: HandlerClient
) -> None:
    wid = unique_id("saga-timeout")
    handler.script(slow=[{"delay": 3}])
    api.create(
        {
            "id": wid,
            "saga": True,
            "timeout": 1,
            "steps": [
                step(handler, "a", compensation=undo(handler, "a")),
                step(handler, "slow", "a", compensation=undo(handler, "slow")),
                step(handler, "next", "slow", compensation=undo(handler, "next")),
            ],
        }
    )

    document = api.wait_status(wid, "compensated", WAIT)

    assert document["error"]["code"] == "workflow_timeout"
    assert statuses(document) == {"a": "completed", "slow": "completed", "next": "cancelled"}
    assert [r["name"] for r in compensations(handler)] == ["undo_slow", "undo_a"]
    assert_never_called(handler, "next", quiet=0)
