"""Delayed starts, batch creates, ``onFailure`` and the graph, against real servers.

A delayed start survives a restart (its time is in the database); a batch is stored
all or nothing and answered in request order; each ``onFailure`` option of a diamond
whose left branch fails for good does what DESIGN §3 says, with the handler app
recording what each step was sent; the graph of a compensated saga shows every node.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from contract import parse_utc, unique_id
from harness import BatonClient, BatonFactory, HandlerClient
from helpers_failure import once, statuses, step

pytestmark = pytest.mark.slow

WAIT = 30.0


def diamond(handler: HandlerClient, workflow_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": workflow_id,
        "steps": [
            step(handler, "start"),
            step(handler, "a", "start"),
            step(handler, "b", "start"),
            step(handler, "merge", "a", "b"),
        ],
        **fields,
    }


# --------------------------------------------------------------------------- delayed start


def test_a_delayed_start_survives_a_restart(
    baton_factory: BatonFactory, handler: HandlerClient
) -> None:
    server = baton_factory.create()
    wid = unique_id("delayed")
    with server.client() as api:
        created = api.create(diamond(handler, wid, delay=4, timeout=60))
    assert created["status"] == "pending" and created["startedAt"] is None
    start_at = parse_utc(created["startAt"])
    server.stop()
    time.sleep(max(0.0, start_at.timestamp() - time.time()) + 2)
    server.restart()
    with server.client() as api:
        document = api.wait_status(wid, "completed", WAIT)
        started = parse_utc(document["startedAt"])
        assert started >= start_at
        events = api.events(wid)
    assert [e["type"] for e in events][:2] == ["workflow.created", "workflow.started"]
    assert events[0]["data"]["startAt"] == created["startAt"]
    # Nothing was sent before the start; the first request came after the restart.
    first = handler.requests("start")[0]
    assert first["received_at"] >= start_at.timestamp()


def test_a_pending_workflow_is_cancelled_before_it_starts(
    api: BatonClient, handler: HandlerClient
) -> None:
    wid = unique_id("pending")
    api.create(diamond(handler, wid, delay=2, onError=handler.hook_url("failed")))
    response = api.http.post(f"/v1/workflows/{wid}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    time.sleep(3)
    assert handler.requests("start") == []
    hooks = handler.wait_count(1, "failed", kind="hooks")
    assert hooks[0]["json"]["status"] == "cancelled"
    assert "workflow.started" not in [e["type"] for e in api.events(wid)]


# --------------------------------------------------------------------------- batch


def test_a_batch_is_all_or_nothing_and_answers_in_order(
    api: BatonClient, handler: HandlerClient
) -> None:
    ids = [unique_id(f"batch{i}") for i in range(5)]
    bad = diamond(handler, unique_id("bad"))
    bad["steps"][3]["dependsOn"] = ["nope"]
    refused = api.http.post(
        "/v1/workflows/batch",
        json={"workflows": [diamond(handler, i) for i in ids[:3]] + [bad]},
    )
    assert refused.status_code == 422
    assert [e["path"] for e in refused.json()["errors"]] == ["workflows[3].steps[3].dependsOn[0]"]
    for wid in ids[:3]:
        assert api.http.get(f"/v1/workflows/{wid}").status_code == 404

    created = api.http.post(
        "/v1/workflows/batch", json={"workflows": [diamond(handler, i) for i in ids]}
    )
    assert created.status_code == 201, created.text
    assert [d["id"] for d in created.json()["items"]] == ids
    documents = api.wait_all(ids, "completed", WAIT)
    assert all(d["completedSteps"][-1] == "merge" for d in documents.values())

    changed = diamond(handler, ids[2], name="changed")
    conflict = api.http.post(
        "/v1/workflows/batch",
        json={"workflows": [diamond(handler, unique_id("new")), changed]},
    )
    assert conflict.status_code == 409
    assert [e["path"] for e in conflict.json()["errors"]] == ["workflows[1].id"]


# --------------------------------------------------------------------------- onFailure


def failing_left(handler: HandlerClient, wid: str, option: str | None, **fields: Any) -> dict:
    """A diamond whose ``a`` fails for good at once (with ``onFailure`` ``option``) while
    ``b`` takes a second; ``start`` has a compensation."""
    left = step(handler, "a", "start", retries=once())
    if option is not None:
        left["onFailure"] = option
    return {
        "id": wid,
        "saga": True,
        "steps": [
            step(handler, "start", compensation=handler.step_url("undo")),
            left,
            step(handler, "b", "start"),
            step(handler, "merge", "a", "b"),
        ],
        **fields,
    }


@pytest.mark.parametrize("option", [None, "fail", "ignore", "remove", "continue"])
def test_each_on_failure_option_in_a_diamond(
    api: BatonClient, handler: HandlerClient, option: str | None
) -> None:
    handler.script(a=[{"status": 404}], b=[{"delay": 1.0}])
    wid = unique_id(f"on-failure-{option}")
    api.create(failing_left(handler, wid, option))
    document = api.wait_status(wid, ["completed", "compensated"], WAIT)
    steps = statuses(document)
    assert steps["a"] == "failed"
    if option in (None, "fail"):
        # The workflow is doomed: merge never runs, start is compensated.
        assert document["status"] == "compensated"
        assert steps["merge"] == "cancelled"
        assert [r["name"] for r in handler.wait_count(1, "undo")] == ["undo"]
        assert handler.requests("merge") == []
        return
    # Not a failure of the workflow: merge runs, nothing is compensated.
    assert document["status"] == "completed" and steps["merge"] == "completed"
    assert handler.requests("undo") == []
    [merge] = handler.requests("merge")
    [b] = handler.requests("b")
    previous = merge["json"]["previousSteps"]
    if option == "continue":
        # merge went out as soon as a failed, while b was still being answered.
        assert merge["received_mono"] < b["ended_mono"]
        assert previous["a"]["status"] == "failed"
    else:
        assert merge["received_mono"] >= b["ended_mono"]
        assert previous["b"]["status"] == "completed"
        if option == "ignore":
            assert previous["a"] == {"status": "failed", "error": document["steps"][1]["error"]}
        else:
            assert "a" not in previous


def test_mixed_options_and_a_skipped_step_in_one_diamond(
    api: BatonClient, handler: HandlerClient
) -> None:
    handler.script(a=[{"status": 404}], b=[{"status": 404}])
    wid = unique_id("mixed")
    api.create(
        {
            "id": wid,
            "saga": True,
            "steps": [
                step(handler, "start", compensation=handler.step_url("undo")),
                step(handler, "a", "start", retries=once(), onFailure="ignore"),
                step(handler, "b", "start", retries=once(), onFailure="remove"),
                # Skipped by its condition: never a failure, whatever its option.
                step(handler, "s", "start", when="false", onFailure="fail"),
                step(handler, "merge", "a", "b", "s"),
            ],
        }
    )
    document = api.wait_status(wid, "completed", WAIT)
    assert document["failedSteps"] == ["a", "b"] and document["skippedSteps"] == ["s"]
    [merge] = handler.wait_count(1, "merge")
    assert sorted(merge["json"]["previousSteps"]) == ["a", "s", "start"]
    assert merge["json"]["previousSteps"]["s"] == {"status": "skipped"}
    assert handler.requests("undo") == []


# --------------------------------------------------------------------------- graph


def test_the_graph_of_a_saga_workflow(api: BatonClient, handler: HandlerClient) -> None:
    handler.script(ship=[{"status": 404}])
    wid = unique_id("graph")
    api.create(
        {
            "id": wid,
            "saga": True,
            "onComplete": handler.hook_url("done"),
            "onError": handler.hook_url("failed"),
            "steps": [
                step(handler, "reserve", compensation=handler.step_url("unreserve")),
                step(handler, "charge", "reserve", compensation=handler.step_url("refund")),
                step(handler, "ship", "charge", retries=once()),
            ],
        }
    )
    api.wait_status(wid, "compensated", WAIT)
    handler.wait_count(1, "failed", kind="hooks")

    def graph() -> dict[str, Any]:
        response = api.http.get(f"/v1/workflows/{wid}/graph")
        assert response.status_code == 200, response.text
        return response.json()

    deadline = time.monotonic() + WAIT
    while (nodes := {n["id"]: n for n in graph()["nodes"]})["#on_error"]["status"] != "completed":
        assert time.monotonic() < deadline, nodes["#on_error"]
        time.sleep(0.1)
    document = graph()
    assert [(n["id"], n["kind"], n["status"]) for n in document["nodes"]] == [
        ("reserve", "step", "completed"),
        ("reserve#compensation", "compensation", "completed"),
        ("charge", "step", "completed"),
        ("charge#compensation", "compensation", "completed"),
        ("ship", "step", "failed"),
        ("#on_complete", "on_complete", None),
        ("#on_error", "on_error", "completed"),
    ]
    assert all(n["queue"] is None and n["jobId"] is None for n in document["nodes"])
    assert {(e["from"], e["to"]) for e in document["edges"]} == {
        ("reserve", "charge"),
        ("charge", "ship"),
        ("reserve", "reserve#compensation"),
        ("charge", "charge#compensation"),
        # Compensations in reverse completion order, then onError.
        ("charge#compensation", "reserve#compensation"),
        ("reserve#compensation", "#on_error"),
        ("ship", "#on_complete"),
        ("ship", "#on_error"),
    }
