"""Schedules and delayed starts over HTTP, in-process, deliveries to a mock transport.

Each answer is held to its documented model (``answer``), each refusal is a problem
document naming the field. Schedules fire for real here (the lifespan's timekeeper),
with one-second ticks.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from starlette.datastructures import Secret
from starlette.exceptions import StarletteDeprecationWarning

from app.documents import Problem, ScheduleDocument, SchedulePage, WorkflowDocument
from app.main import create_app
from app.settings import Settings
from baton.signing import generate_secret
from tests.unit.test_openapi import answer, wait_until

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

KEY = "k1"
OTHER = "k2"
AUTH = {"Authorization": f"Bearer {KEY}"}
WORKFLOW = {"name": "report", "steps": [{"id": "a", "url": "https://handler.example/a"}]}


class Recorder:
    """Answers every step at once and keeps the bodies it was sent."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.bodies.append(orjson.loads(request.content))
        return httpx.Response(200, json={"success": True, "result": {"ok": True}})


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def client(tmp_path: Path, recorder: Recorder) -> Iterator[TestClient]:
    app = create_app(
        Settings(
            database_url=f"sqlite://{tmp_path}/db.sqlite3",
            data_dir=tmp_path,
            api_keys=(Secret(KEY), Secret(OTHER)),
            signing_secrets=(Secret(generate_secret()),),
        ),
        transport=httpx.MockTransport(recorder),
    )
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def put(client: TestClient, schedule_id: str, **fields: Any) -> httpx.Response:
    body = {"workflow": WORKFLOW, **fields}
    if "cron" not in body and "every" not in body:
        body["every"] = 3600
    return client.put(f"/v1/schedules/{schedule_id}", json=body, headers=AUTH)


def problem_paths(response: httpx.Response, status: int = 422) -> list[str]:
    document = answer(response, Problem, status)
    return [e["path"] for e in document["errors"]]


# --------------------------------------------------------------------------- schedules


def test_put_creates_then_replaces(client: TestClient) -> None:
    created = put(client, "nightly", cron="0 3 * * *", timezone="Europe/Paris", jitter=30)
    document = answer(created, ScheduleDocument, 201)
    assert created.headers["location"] == "/v1/schedules/nightly"
    assert document["id"] == "nightly" and document["overlap"] == "skip"
    assert document["catchupWindow"] == 300 and document["firedCount"] == 0
    assert document["workflow"] == WORKFLOW and document["recentRuns"] == []
    assert document["nextRunAt"].endswith(":00:00.000Z")
    replaced = answer(put(client, "nightly", cron="@hourly"), ScheduleDocument)
    assert replaced["cron"] == "@hourly" and replaced["timezone"] == "UTC"
    read = answer(client.get("/v1/schedules/nightly", headers=AUTH), ScheduleDocument)
    assert read == replaced


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "@reboot"}, "cron"),
        ({"cron": "0 3 * * *", "every": 60}, "cron"),
        ({"every": 0}, "every"),
        ({"every": 1.5}, "every"),
        ({"cron": "0 3 * * *", "timezone": "Mars/Olympus"}, "timezone"),
        ({"startAt": "tomorrow"}, "startAt"),
        ({"startAt": "2030-01-01T00:00:00"}, "startAt"),  # no time zone
        ({"startAt": "2030-01-02T00:00:00Z", "endAt": "2030-01-01T00:00:00Z"}, "endAt"),
        ({"endAt": "2020-01-01T00:00:00Z"}, "endAt"),
        ({"overlap": "queue"}, "overlap"),
        ({"catchupWindow": 0}, "catchupWindow"),
        ({"jitter": -1}, "jitter"),
        ({"limit": 0}, "limit"),
        ({"cadence": "daily"}, "cadence"),
        ({"workflow": {"steps": [{"id": "a", "url": "ftp://x"}]}}, "workflow.steps[0].url"),
        ({"workflow": {"steps": []}}, "workflow.steps"),
        ({"workflow": {**WORKFLOW, "id": "mine"}}, "workflow.id"),
        ({"workflow": {**WORKFLOW, "delay": 5}}, "workflow.delay"),
        ({"workflow": "report"}, "workflow"),
    ],
)
def test_invalid_schedules_are_refused_naming_the_field(
    client: TestClient, fields: dict[str, Any], path: str
) -> None:
    body = {"workflow": WORKFLOW, **fields}
    if not {"cron", "every"} & set(body):
        body["every"] = 60
    response = client.put("/v1/schedules/s", json=body, headers=AUTH)
    assert path in problem_paths(response)
    assert client.get("/v1/schedules/s", headers=AUTH).status_code == 404


def test_schedule_ids_follow_workflow_ids_with_room_for_the_tick(client: TestClient) -> None:
    assert problem_paths(put(client, "a" * 111)) == ["scheduleId"]
    answer(put(client, "a" * 110), ScheduleDocument, 201)
    answer(client.get("/v1/schedules/bad id", headers=AUTH), Problem, 404)


def test_list_pages_by_id_and_namespaces_are_apart(client: TestClient) -> None:
    for name in ("c", "a", "b"):
        answer(put(client, name), ScheduleDocument, 201)
    first = answer(client.get("/v1/schedules?limit=2", headers=AUTH), SchedulePage)
    assert [s["id"] for s in first["items"]] == ["a", "b"]
    rest = answer(
        client.get(f"/v1/schedules?limit=2&cursor={first['nextCursor']}", headers=AUTH),
        SchedulePage,
    )
    assert [s["id"] for s in rest["items"]] == ["c"] and rest["nextCursor"] is None
    assert problem_paths(client.get("/v1/schedules?cursor=%25%25", headers=AUTH)) == ["cursor"]
    assert problem_paths(client.get("/v1/schedules?limit=0", headers=AUTH)) == ["limit"]


def test_pause_resume_delete(client: TestClient) -> None:
    answer(put(client, "s"), ScheduleDocument, 201)
    paused = answer(
        client.post("/v1/schedules/s/pause", json={"note": "maintenance"}, headers=AUTH),
        ScheduleDocument,
    )
    assert paused["paused"] and paused["nextRunAt"] is None and paused["note"] == "maintenance"
    assert problem_paths(client.post("/v1/schedules/s/pause", json={"note": 5}, headers=AUTH)) == [
        "note"
    ]
    resumed = answer(client.post("/v1/schedules/s/resume", headers=AUTH), ScheduleDocument)
    assert not resumed["paused"] and resumed["nextRunAt"] is not None
    deleted = client.delete("/v1/schedules/s", headers=AUTH)
    assert deleted.status_code == 204 and deleted.content == b""
    answer(client.delete("/v1/schedules/s", headers=AUTH), Problem, 404)
    answer(client.post("/v1/schedules/s/pause", headers=AUTH), Problem, 404)
    answer(client.post("/v1/schedules/s/trigger", headers=AUTH), Problem, 404)


def test_trigger_fires_now_and_the_workflow_says_where_it_comes_from(
    client: TestClient, recorder: Recorder
) -> None:
    answer(put(client, "s", paused=True), ScheduleDocument, 201)
    fired = client.post("/v1/schedules/s/trigger", headers=AUTH)
    document = answer(fired, WorkflowDocument, 201)
    assert fired.headers["location"] == f"/v1/workflows/{document['id']}"
    assert document["id"].startswith("s-") and document["id"].endswith("Z")
    assert document["scheduleId"] == "s"
    tick = datetime.fromisoformat(document["scheduledAt"])
    assert document["id"] == "s-" + tick.strftime("%Y%m%dT%H%M%SZ")
    wait_until(lambda: recorder.bodies != [])
    assert recorder.bodies[0]["schedule"] == {"id": "s", "scheduledAt": document["scheduledAt"]}
    schedule = answer(client.get("/v1/schedules/s", headers=AUTH), ScheduleDocument)
    assert schedule["firedCount"] == 1 and schedule["lastRunAt"] is not None
    assert schedule["recentRuns"][0]["workflowId"] == document["id"]


def test_a_one_second_schedule_fires_on_its_own(client: TestClient) -> None:
    answer(put(client, "tick", every=1, overlap="allow"), ScheduleDocument, 201)

    def fired() -> int:
        return int(client.get("/v1/schedules/tick", headers=AUTH).json()["firedCount"])

    wait_until(lambda: fired() >= 2, seconds=10)
    document = answer(client.get("/v1/schedules/tick", headers=AUTH), ScheduleDocument)
    ids = [r["workflowId"] for r in document["recentRuns"]]
    assert all(i.startswith("tick-") for i in ids) and len(set(ids)) == len(ids)
    metrics = client.get("/metrics").text
    line = next(
        line
        for line in metrics.splitlines()
        if line.startswith('baton_schedule_fires_total{outcome="fired"}')
    )
    assert float(line.split()[-1]) >= 2
    assert 'baton_schedule_fires_total{outcome="missed"} 0.0' in metrics


# --------------------------------------------------------------------------- delayed start


def test_a_delayed_workflow_is_pending_until_its_time(
    client: TestClient, recorder: Recorder
) -> None:
    created = client.post("/v1/workflows", json={**WORKFLOW, "delay": 1.0}, headers=AUTH)
    document = answer(created, WorkflowDocument, 201)
    assert document["status"] == "pending" and document["startedAt"] is None
    assert document["startAt"] is not None and document["currentSteps"] == []
    time.sleep(0.3)
    assert recorder.bodies == []

    def status() -> str:
        return str(client.get(f"/v1/workflows/{document['id']}", headers=AUTH).json()["status"])

    wait_until(lambda: status() == "completed", seconds=10)
    final = answer(client.get(f"/v1/workflows/{document['id']}", headers=AUTH), WorkflowDocument)
    start = datetime.fromisoformat(final["startAt"])
    assert datetime.fromisoformat(final["startedAt"]) >= start
    events = client.get(f"/v1/workflows/{document['id']}/events", headers=AUTH).json()["items"]
    types = [e["type"] for e in events]
    assert types[:2] == ["workflow.created", "workflow.started"]
    assert events[0]["data"]["startAt"] == final["startAt"]
    assert datetime.fromisoformat(events[1]["at"]) >= start


def test_a_pending_workflow_can_be_cancelled(client: TestClient) -> None:
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    document = answer(
        client.post("/v1/workflows", json={**WORKFLOW, "startAt": later}, headers=AUTH),
        WorkflowDocument,
        201,
    )
    assert document["status"] == "pending"
    assert answer(
        client.post(f"/v1/workflows/{document['id']}/steps/a/retry", headers=AUTH), Problem, 409
    )
    cancelled = answer(
        client.post(f"/v1/workflows/{document['id']}/cancel", headers=AUTH), WorkflowDocument
    )
    assert cancelled["status"] == "cancelled" and cancelled["startedAt"] is None


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"delay": -1}, "delay"),
        ({"delay": 2_678_401}, "delay"),
        ({"delay": "soon"}, "delay"),
        ({"startAt": "2030-13-01T00:00:00Z"}, "startAt"),
        ({"startAt": 1_900_000_000}, "startAt"),
        ({"startAt": "2030-01-01T00:00:00"}, "startAt"),
        ({"startAt": "2030-01-01T00:00:00Z", "delay": 5}, "delay"),
    ],
)
def test_invalid_start_times_are_refused(
    client: TestClient, fields: dict[str, Any], path: str
) -> None:
    response = client.post("/v1/workflows", json={**WORKFLOW, **fields}, headers=AUTH)
    assert path in problem_paths(response)


def test_a_start_time_in_the_past_starts_at_once(client: TestClient) -> None:
    document = answer(
        client.post(
            "/v1/workflows", json={**WORKFLOW, "startAt": "2020-01-01T00:00:00+01:00"}, headers=AUTH
        ),
        WorkflowDocument,
        201,
    )
    assert document["status"] == "running" and document["startAt"] is None
