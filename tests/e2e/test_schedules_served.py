"""Schedules against real server processes (DESIGN §8).

A one-second schedule run for several seconds; overlap ``skip`` with a slow step; two
servers on one PostgreSQL firing each tick once; a server stopped for several ticks
and restarted (missed runs recorded, no stampede). Ticks are whole seconds, so the
workflow ids (``{scheduleId}-{YYYYMMDDTHHMMSSZ}``) of a run with nothing skipped are
consecutive seconds.
"""

from __future__ import annotations

import itertools
import re
import time
from datetime import datetime, timedelta
from typing import Any

import pytest
from contract import parse_utc, unique_id
from harness import BatonClient, BatonFactory, HandlerClient
from test_scale_out import postgres_admin_url

__all__ = ["postgres_admin_url"]  # a fixture

pytestmark = pytest.mark.slow

WAIT = 30.0
TICK_ID = re.compile(r"^(?P<schedule>.+)-(?P<tick>\d{8}T\d{6}Z)$")


def put(api: BatonClient, schedule_id: str, body: dict[str, Any], expect: int = 201) -> dict:
    response = api.http.put(f"/v1/schedules/{schedule_id}", json=body)
    assert response.status_code == expect, response.text
    return response.json()


def get(api: BatonClient, schedule_id: str) -> dict:
    response = api.http.get(f"/v1/schedules/{schedule_id}")
    assert response.status_code == 200, response.text
    return response.json()


def pause(api: BatonClient, schedule_id: str) -> dict:
    response = api.http.post(f"/v1/schedules/{schedule_id}/pause")
    assert response.status_code == 200, response.text
    return response.json()


def every_second(handler: HandlerClient, **fields: Any) -> dict[str, Any]:
    return {
        "every": 1,
        "workflow": {"name": "tick", "steps": [{"id": "a", "url": handler.step_url("a")}]},
        **fields,
    }


def tick_of(workflow_id: str) -> datetime:
    match = TICK_ID.fullmatch(workflow_id)
    assert match, workflow_id
    return datetime.strptime(match["tick"], "%Y%m%dT%H%M%SZ")


def fired_ids(schedule: dict) -> list[str]:
    """The workflows of the schedule's recent runs, oldest first."""
    return [r["workflowId"] for r in reversed(schedule["recentRuns"]) if r["outcome"] == "fired"]


def metric(api: BatonClient, outcome: str) -> float:
    text = api.http.get("/metrics").text
    prefix = f'baton_schedule_fires_total{{outcome="{outcome}"}}'
    return float(next(line for line in text.splitlines() if line.startswith(prefix)).split()[-1])


def test_a_one_second_schedule_fires_every_second(api: BatonClient, handler: HandlerClient) -> None:
    sid = unique_id("every")
    put(api, sid, every_second(handler, overlap="allow"))
    time.sleep(5.5)
    schedule = pause(api, sid)

    ids = fired_ids(schedule)
    assert len(ids) >= 4, schedule["recentRuns"]
    assert schedule["firedCount"] == len(ids)
    assert [r["outcome"] for r in schedule["recentRuns"]] == ["fired"] * len(ids)
    ticks = [tick_of(i) for i in ids]
    # One workflow per second, none missing, none twice.
    assert ticks == [ticks[0] + timedelta(seconds=n) for n in range(len(ticks))]
    assert all(TICK_ID.fullmatch(i)["schedule"] == sid for i in ids)  # type: ignore[index]
    for run in schedule["recentRuns"]:
        # Fired on time: within a second of its tick (the timekeeper wakes for each one).
        late = parse_utc(run["firedAt"]) - parse_utc(run["scheduledAt"])
        assert timedelta(0) <= late < timedelta(seconds=1), run
    documents = api.wait_all(ids, "completed", WAIT)
    for workflow_id, document in documents.items():
        assert document["scheduleId"] == sid
        assert tick_of(workflow_id) == parse_utc(document["scheduledAt"]).replace(tzinfo=None)
    # The step requests say which schedule and tick they come from.
    records = handler.wait_count(len(ids), "a")
    schedules = {r["json"]["workflowId"]: r["json"]["schedule"] for r in records}
    for workflow_id in ids:
        assert schedules[workflow_id]["id"] == sid
        assert schedules[workflow_id]["scheduledAt"] == documents[workflow_id]["scheduledAt"]
    # Paused: nothing more fires.
    time.sleep(1.5)
    assert get(api, sid)["firedCount"] == schedule["firedCount"]


def test_overlap_skip_leaves_one_workflow_open_at_a_time(
    api: BatonClient, handler: HandlerClient
) -> None:
    handler.script(a=[{"delay": 2.2}])
    sid = unique_id("skip")
    put(api, sid, every_second(handler))
    time.sleep(7)
    schedule = pause(api, sid)

    outcomes = [r["outcome"] for r in reversed(schedule["recentRuns"])]
    ids = fired_ids(schedule)
    assert len(ids) >= 2 and outcomes.count("skipped") >= 3, outcomes
    assert set(outcomes) == {"fired", "skipped"}
    documents = api.wait_all(ids, "completed", WAIT)
    # Each fired only once the previous had ended.
    spans = [
        (parse_utc(documents[i]["createdAt"]), parse_utc(documents[i]["completedAt"])) for i in ids
    ]
    for (_, ended), (began, _) in itertools.pairwise(spans):
        assert began >= ended
    # Every tick from the first to the last is accounted for.
    runs = [parse_utc(r["scheduledAt"]) for r in reversed(schedule["recentRuns"])]
    assert runs == [runs[0] + timedelta(seconds=n) for n in range(len(runs))]


@pytest.mark.postgres
def test_two_servers_on_one_postgres_fire_each_tick_once(
    baton_factory: BatonFactory, handler: HandlerClient, postgres_admin_url: str
) -> None:
    database_url = baton_factory.postgres_url(postgres_admin_url)
    servers = [baton_factory.create(database_url=database_url) for _ in range(2)]
    # Both servers take the one API key of the first.
    servers[1].api_key = servers[0].api_key
    servers[1].restart()
    sid = unique_id("twice")
    with servers[0].client() as first, servers[1].client() as second:
        put(first, sid, every_second(handler, overlap="allow"))
        time.sleep(6.5)
        schedule = pause(second, sid)
        ids = fired_ids(schedule)
        assert len(ids) >= 5, schedule["recentRuns"]
        ticks = [tick_of(i) for i in ids]
        assert ticks == [ticks[0] + timedelta(seconds=n) for n in range(len(ticks))]
        assert schedule["firedCount"] == len(ids)
        first.wait_all(ids, "completed", WAIT)
        # Each workflow's step was sent once, and the two processes' fires add up.
        records = handler.wait_count(len(ids), "a")
        assert sorted(r["json"]["workflowId"] for r in records) == sorted(ids)
        assert metric(first, "fired") + metric(second, "fired") == len(ids)


def test_a_server_stopped_for_several_ticks_records_them_missed_without_a_stampede(
    baton_factory: BatonFactory, handler: HandlerClient
) -> None:
    server = baton_factory.create()
    sid = unique_id("down")
    with server.client() as api:
        put(api, sid, every_second(handler, catchupWindow=2))
        time.sleep(2.5)
    server.stop()
    stopped = time.time()
    time.sleep(6)
    server.restart()
    with server.client() as api:
        time.sleep(2.5)
        schedule = pause(api, sid)
        runs = list(reversed(schedule["recentRuns"]))
        down = [
            r for r in runs if stopped < parse_utc(r["scheduledAt"]).timestamp() < stopped + 6 - 2.5
        ]
        assert down and {r["outcome"] for r in down} == {"missed"}, runs
        assert len(down) >= 3
        # The ticks young enough at the restart (within the 2 s window) fire one workflow
        # at most; the rest are skipped: no burst of workflows.
        by_second: dict[int, int] = {}
        for run in runs:
            if run["outcome"] == "fired":
                fired_at = int(parse_utc(run["firedAt"]).timestamp())
                by_second[fired_at] = by_second.get(fired_at, 0) + 1
        assert max(by_second.values()) == 1, runs
        # Every tick of the whole run is accounted for, the missed ones included.
        ticks = [parse_utc(r["scheduledAt"]) for r in runs]
        assert ticks == [ticks[0] + timedelta(seconds=n) for n in range(len(ticks))]
        assert metric(api, "missed") == len([r for r in runs if r["outcome"] == "missed"])
