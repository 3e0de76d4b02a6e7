"""Batch create, the graph and ``onFailure`` over HTTP, in-process.

Deliveries go to a mock transport; answers are held to their documented models.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from app.documents import GraphDocument, Problem, WorkflowBatch, WorkflowDocument
from app.schemas import MAX_BATCH_STEPS, MAX_BATCH_WORKFLOWS
from tests.unit.test_api_schedules import AUTH, TestClient, client, problem_paths, recorder
from tests.unit.test_openapi import answer, wait_until

__all__ = ["client", "recorder"]  # fixtures


def diamond(workflow_id: str | None = None, **fields: Any) -> dict[str, Any]:
    url = "https://handler.example/"
    body: dict[str, Any] = {
        "steps": [
            {"id": "start", "url": url + "start"},
            {"id": "a", "url": url + "a", "dependsOn": ["start"]},
            {"id": "b", "url": url + "b", "dependsOn": ["start"]},
            {"id": "merge", "url": url + "merge", "dependsOn": ["a", "b"]},
        ],
        **fields,
    }
    if workflow_id is not None:
        body["id"] = workflow_id
    return body


def batch(client: TestClient, *workflows: dict[str, Any]) -> Any:
    return client.post("/v1/workflows/batch", json={"workflows": list(workflows)}, headers=AUTH)


def status(client: TestClient, workflow_id: str) -> str:
    return str(client.get(f"/v1/workflows/{workflow_id}", headers=AUTH).json()["status"])


# --------------------------------------------------------------------------- batch


def test_a_batch_answers_in_request_order_and_runs(client: TestClient) -> None:
    documents = answer(
        batch(client, diamond("w1"), diamond(), diamond("w3", name="third")), WorkflowBatch, 201
    )["items"]
    assert [d["id"] for d in documents][::2] == ["w1", "w3"]
    assert documents[1]["id"].startswith("wf_") and documents[2]["name"] == "third"
    for document in documents:
        wait_until(lambda d=document: status(client, d["id"]) == "completed")
    # Sent again: every item exists with the same body.
    again = answer(batch(client, diamond("w1"), diamond("w3", name="third")), WorkflowBatch)
    assert [d["status"] for d in again["items"]] == ["completed", "completed"]


def test_an_invalid_item_is_named_and_nothing_is_stored(client: TestClient) -> None:
    bad = diamond("bad")
    bad["steps"][0]["id"] = "has space"
    paths = problem_paths(batch(client, diamond("good"), diamond("ok2"), bad))
    assert paths == ["workflows[2].steps[0].id"]
    answer(client.get("/v1/workflows/good", headers=AUTH), Problem, 404)


def test_a_conflicting_item_is_named_and_nothing_is_stored(client: TestClient) -> None:
    answer(client.post("/v1/workflows", json=diamond("taken"), headers=AUTH), WorkflowDocument, 201)
    response = batch(client, diamond("fresh"), diamond("taken", name="other"))
    assert problem_paths(response, 409) == ["workflows[1].id"]
    answer(client.get("/v1/workflows/fresh", headers=AUTH), Problem, 404)


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"workflows": []}, "workflows"),
        ({"workflows": {}}, "workflows"),
        ({}, "workflows"),
        ({"workflows": [diamond()], "extra": 1}, "extra"),
        ({"workflows": [diamond("x"), diamond("x")]}, "workflows[1].id"),
        ({"workflows": [5]}, "workflows[0]"),
        ({"workflows": [diamond(delay=-1)]}, "workflows[0].delay"),
    ],
)
def test_batch_shapes(client: TestClient, body: dict[str, Any], path: str) -> None:
    response = client.post("/v1/workflows/batch", json=body, headers=AUTH)
    assert path in problem_paths(response)


def test_batch_limits(client: TestClient) -> None:
    one = {"steps": [{"id": "a", "url": "https://handler.example/a"}]}
    too_many = {"workflows": [one] * (MAX_BATCH_WORKFLOWS + 1)}
    assert problem_paths(client.post("/v1/workflows/batch", json=too_many, headers=AUTH)) == [
        "workflows"
    ]
    wide = {
        "steps": [{"id": f"s{i}", "url": "https://h.example/"} for i in range(10_000)],
    }
    steps = {"workflows": [wide] * (MAX_BATCH_STEPS // 10_000 + 1)}
    response = client.post(
        "/v1/workflows/batch",
        content=orjson.dumps(steps),
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert problem_paths(response) == ["workflows"]
    assert "100000 steps" in response.json()["errors"][0]["message"]


def test_a_batch_of_delayed_workflows_waits(client: TestClient) -> None:
    items = answer(batch(client, diamond("d1", delay=0.5), diamond("d2")), WorkflowBatch, 201)
    assert [d["status"] for d in items["items"]] == ["pending", "running"]
    wait_until(lambda: status(client, "d1") == "completed", seconds=10)


# --------------------------------------------------------------------------- graph


def test_the_graph_of_a_running_and_then_finished_workflow(client: TestClient) -> None:
    answer(
        client.post(
            "/v1/workflows",
            json=diamond(
                "g",
                saga=True,
                onComplete="https://handler.example/done",
                onError="https://handler.example/failed",
            ),
            headers=AUTH,
        ),
        WorkflowDocument,
        201,
    )
    wait_until(lambda: status(client, "g") == "completed")
    graph = answer(client.get("/v1/workflows/g/graph", headers=AUTH), GraphDocument)
    nodes = {n["id"]: n for n in graph["nodes"]}
    assert [n["id"] for n in graph["nodes"]] == [
        "start",
        "a",
        "b",
        "merge",
        "#on_complete",
        "#on_error",
    ]
    assert {n["status"] for n in graph["nodes"][:4]} == {"completed"}
    assert nodes["#on_complete"]["kind"] == "on_complete"
    wait_until(
        lambda: (
            client.get("/v1/workflows/g/graph", headers=AUTH).json()["nodes"][4]["status"]
            == "completed"
        )
    )
    assert nodes["#on_error"]["status"] is None
    assert {(e["from"], e["to"]) for e in graph["edges"]} == {
        ("start", "a"),
        ("start", "b"),
        ("a", "merge"),
        ("b", "merge"),
        ("merge", "#on_complete"),
        ("merge", "#on_error"),
    }
    answer(client.get("/v1/workflows/nope/graph", headers=AUTH), Problem, 404)


# --------------------------------------------------------------------------- onFailure


def test_on_failure_is_validated_and_shown(client: TestClient) -> None:
    body = diamond()
    body["steps"][1]["onFailure"] = "skip"
    assert problem_paths(client.post("/v1/workflows", json=body, headers=AUTH)) == [
        "steps[1].onFailure"
    ]
    body["steps"][1].update(onFailure="remove", continueOnFailure=True)
    assert problem_paths(client.post("/v1/workflows", json=body, headers=AUTH)) == [
        "steps[1].onFailure"
    ]
    body["steps"][1].update(onFailure="ignore", continueOnFailure=True)
    body["steps"][2]["onFailure"] = "continue"
    document = answer(client.post("/v1/workflows", json=body, headers=AUTH), WorkflowDocument, 201)
    assert [(s["onFailure"], s["continueOnFailure"]) for s in document["steps"]] == [
        ("fail", False),
        ("ignore", True),
        ("continue", False),
        ("fail", False),
    ]


def test_a_value_that_cannot_be_stored_is_named(client: TestClient) -> None:
    raw = b'{"workflows": [{"steps": [{"id": "a", "url": "https://h.example/"}], "context":'
    raw += b' {"n": 123456789012345678901234567890}}]}'
    response = client.post(
        "/v1/workflows/batch", content=raw, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert problem_paths(response) == ["workflows[0].context.n"]
