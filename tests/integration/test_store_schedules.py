"""Schedules, delayed starts, batch creates and the graph, in the store, on both databases.

Firing is driven with explicit times (``now=``): a test runs minutes of a schedule's
life in milliseconds. Every tick fires once: two firers at once on either database,
a trigger in the same second, a key taken by another transaction (PostgreSQL, by
hand on a second connection) all leave one workflow per tick.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from app.db import close_database, open_database
from app.engine import classify_answer
from app.errors import Conflict, NotFound
from app.schemas import ScheduleSpec, parse_schedule_request
from app.store import Store
from tests.integration.storekit import create, drive, ok, spec, steps_by_id
from tests.integration.test_store_races import blocked_or_done, pg

__all__ = ["pg"]  # a fixture: a store on PostgreSQL and a second connection to it

T0 = datetime(2030, 1, 1, 10, 0, tzinfo=UTC)
WORKFLOW = {"name": "report", "steps": [{"id": "a", "url": "http://h/a"}]}


def schedule(**fields: Any) -> ScheduleSpec:
    body = {"workflow": WORKFLOW, **fields}
    if "cron" not in body:
        body.setdefault("every", 60)
    model, _ = parse_schedule_request(
        orjson.dumps(body),
        check_url=lambda url: None,
        check_condition=lambda source: None,
        check_cadence=lambda spec: [],
    )
    return model


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


async def workflow_ids(store: Store, schedule_id: str = "s") -> list[str]:
    items, _ = await store.list_workflows(limit=500)
    return sorted(i["id"] for i in items if i["id"].startswith(schedule_id + "-"))


async def finish_all(store: Store) -> None:
    await drive(store, lambda request: ok())


# --------------------------------------------------------------------------- managing


async def test_put_get_list_pause_resume_delete(store: Store) -> None:
    document, created = await store.put_schedule("s", schedule(cron="0 3 * * *"), now=T0)
    assert created
    assert document["id"] == "s" and document["cron"] == "0 3 * * *"
    assert document["nextRunAt"] == "2030-01-02T03:00:00.000Z"
    assert (document["firedCount"], document["recentRuns"], document["paused"]) == (0, [], False)
    again, created = await store.put_schedule(
        "s", schedule(cron="0 4 * * *", timezone="Europe/Paris"), now=T0
    )
    assert not created
    assert again["nextRunAt"] == "2030-01-02T03:00:00.000Z"  # 04:00 in Paris
    await store.put_schedule("t", schedule(), namespace="acme", now=T0)
    items, cursor = await store.list_schedules(limit=1)
    assert [i["id"] for i in items] == ["s"] and cursor is None
    acme, _ = await store.list_schedules(namespace="acme")
    assert [i["id"] for i in acme] == ["t"]
    paused = await store.pause_schedule("s", "maintenance")
    assert paused["paused"] and paused["nextRunAt"] is None and paused["note"] == "maintenance"
    resumed = await store.resume_schedule("s", None)
    assert not resumed["paused"] and resumed["nextRunAt"] is not None
    assert await store.delete_schedule("s")
    assert await store.get_schedule("s") is None
    assert not await store.delete_schedule("s")
    with pytest.raises(NotFound):
        await store.pause_schedule("s", None)


async def test_a_tick_fires_its_workflow_once_with_its_id(store: Store) -> None:
    await store.put_schedule("s", schedule(every=60), now=T0)
    assert (await store.fire_due_schedules(now=at(30))).outcomes == {}
    report = await store.fire_due_schedules(now=at(61))
    assert report.outcomes == {"fired": 1} and report.made_due
    assert (await store.fire_due_schedules(now=at(62))).outcomes == {}
    assert await workflow_ids(store) == ["s-20300101T100100Z"]
    document = await store.get_workflow("s-20300101T100100Z")
    assert document is not None
    assert (document["scheduleId"], document["scheduledAt"]) == ("s", "2030-01-01T10:01:00.000Z")
    assert document["status"] == "running"
    # Its step requests say which schedule and tick they come from.
    requests = await store.claim_due(10, lease_seconds=30, now=time.time() + 60)
    assert [r.schedule for r in requests] == [
        {"id": "s", "scheduledAt": "2030-01-01T10:01:00.000Z"}
    ]
    found = await store.get_schedule("s")
    assert found is not None
    assert found["firedCount"] == 1 and found["nextRunAt"] == "2030-01-01T10:02:00.000Z"
    assert found["recentRuns"] == [
        {
            "scheduledAt": "2030-01-01T10:01:00.000Z",
            "firedAt": "2030-01-01T10:01:01.000Z",
            "workflowId": "s-20300101T100100Z",
            "outcome": "fired",
        }
    ]
    assert store.schedule_tally["fired"] == 1


async def test_two_firers_at_once_fire_each_tick_once(database_url: str) -> None:
    await open_database(database_url)
    first, second = Store(), Store()
    try:
        for name in ("s1", "s2", "s3"):
            await first.put_schedule(name, schedule(every=1, overlap="allow"), now=T0)
        for second_ in range(1, 21):
            now = at(second_ + 0.5)
            await asyncio.gather(
                first.fire_due_schedules(now=now), second.fire_due_schedules(now=now)
            )
        for name in ("s1", "s2", "s3"):
            ids = await workflow_ids(first, name)
            assert ids == [f"{name}-20300101T1000{s:02d}Z" for s in range(1, 21)]
            found = await first.get_schedule(name)
            assert found is not None and found["firedCount"] == 20
            assert len(found["recentRuns"]) == 20
            assert {r["outcome"] for r in found["recentRuns"]} == {"fired"}
        assert first.schedule_tally["fired"] + second.schedule_tally["fired"] == 60
    finally:
        await first.conditions.aclose()
        await second.conditions.aclose()
        await close_database()


async def test_a_tick_whose_key_is_taken_fires_nothing_again(store: Store) -> None:
    """The unique (schedule, tick) key decides: a trigger in the same second as a tick
    has fired that tick, whoever comes second finds the key taken."""
    await store.put_schedule("s", schedule(every=60, overlap="allow"), now=T0)
    triggered, created = await store.trigger_schedule("s", now=at(60.2))
    assert created and triggered["id"] == "s-20300101T100100Z"
    assert triggered["scheduledAt"] == "2030-01-01T10:01:00.000Z"
    report = await store.fire_due_schedules(now=at(60.5))
    assert report.outcomes == {}  # the 10:01 tick is the trigger's
    assert await workflow_ids(store) == ["s-20300101T100100Z"]
    found = await store.get_schedule("s")
    assert found is not None and found["firedCount"] == 1
    assert found["nextRunAt"] == "2030-01-01T10:02:00.000Z"
    # The same second again answers the same workflow; another second fires anew.
    same, created = await store.trigger_schedule("s", now=at(60.9))
    assert not created and same["id"] == triggered["id"]
    other, created = await store.trigger_schedule("s", now=at(75))
    assert created and other["id"] == "s-20300101T100115Z"


async def test_trigger_fires_while_paused_and_respects_the_limit(store: Store) -> None:
    await store.put_schedule("s", schedule(paused=True, limit=1), now=T0)
    document, created = await store.trigger_schedule("s", now=at(5))
    assert created and document["status"] == "running"
    with pytest.raises(Conflict, match="limit"):
        await store.trigger_schedule("s", now=at(6))
    with pytest.raises(NotFound):
        await store.trigger_schedule("nope", now=at(6))


async def test_overlap_skip_records_ticks_while_the_previous_is_open(store: Store) -> None:
    await store.put_schedule("s", schedule(every=60), now=T0)
    await store.fire_due_schedules(now=at(60))
    assert (await store.fire_due_schedules(now=at(120))).outcomes == {"skipped": 1}
    await finish_all(store)
    assert (await store.fire_due_schedules(now=at(180))).outcomes == {"fired": 1}
    found = await store.get_schedule("s")
    assert found is not None
    assert [(r["scheduledAt"][11:16], r["outcome"]) for r in found["recentRuns"]] == [
        ("10:03", "fired"),
        ("10:02", "skipped"),
        ("10:01", "fired"),
    ]


async def test_buffer_one_fires_the_buffered_tick_once_the_previous_ends(store: Store) -> None:
    await store.put_schedule("s", schedule(every=60, overlap="buffer_one"), now=T0)
    await store.fire_due_schedules(now=at(60))
    assert (await store.fire_due_schedules(now=at(120))).outcomes == {"buffered": 1}
    assert (await store.fire_due_schedules(now=at(130))).outcomes == {}  # still open
    await finish_all(store)
    assert (await store.fire_due_schedules(now=at(135))).outcomes == {"fired": 1}
    assert await workflow_ids(store) == ["s-20300101T100100Z", "s-20300101T100200Z"]
    found = await store.get_schedule("s")
    assert found is not None
    assert found["recentRuns"][0] == {
        "scheduledAt": "2030-01-01T10:02:00.000Z",
        "firedAt": "2030-01-01T10:02:15.000Z",
        "workflowId": "s-20300101T100200Z",
        "outcome": "fired",
    }


async def test_cancel_previous_cancels_the_open_workflow_then_fires(store: Store) -> None:
    await store.put_schedule("s", schedule(every=60, overlap="cancel_previous"), now=T0)
    await store.fire_due_schedules(now=at(60))
    assert (await store.fire_due_schedules(now=at(120))).outcomes == {"fired": 1}
    first = await store.get_workflow("s-20300101T100100Z")
    second = await store.get_workflow("s-20300101T100200Z")
    assert first is not None and first["status"] == "cancelled"
    assert second is not None and second["status"] == "running"


async def test_missed_ticks_are_recorded_and_do_not_stampede(store: Store) -> None:
    await store.put_schedule("s", schedule(every=60, catchupWindow=150), now=T0)
    # No server for ten minutes: ticks 10:01 to 10:10 are due at 10:10:30.
    report = await store.fire_due_schedules(now=at(630))
    assert report.outcomes == {"missed": 7, "fired": 1, "skipped": 2}
    assert len(await workflow_ids(store)) == 1
    found = await store.get_schedule("s")
    assert found is not None
    assert [r["outcome"] for r in reversed(found["recentRuns"])] == [
        *["missed"] * 7,
        "fired",
        "skipped",
        "skipped",
    ]
    assert found["nextRunAt"] == "2030-01-01T10:11:00.000Z"


async def test_recent_runs_keep_the_last_fifty(store: Store) -> None:
    await store.put_schedule("s", schedule(every=1, catchupWindow=1), now=T0)
    assert (await store.fire_due_schedules(now=at(300))).outcomes["missed"] >= 295
    found = await store.get_schedule("s")
    assert found is not None and len(found["recentRuns"]) == 50
    assert found["recentRuns"][0]["scheduledAt"] > found["recentRuns"][-1]["scheduledAt"]


async def test_replacing_a_schedule_keeps_its_count_and_fires_no_tick_twice(store: Store) -> None:
    await store.put_schedule("s", schedule(every=60, overlap="allow"), now=T0)
    await store.fire_due_schedules(now=at(60))
    await store.put_schedule("s", schedule(every=60, overlap="allow"), now=at(30))
    # The next tick after 10:00:30 is 10:01 again: its keys are taken, nothing fires.
    assert (await store.fire_due_schedules(now=at(61))).outcomes == {}
    found = await store.get_schedule("s")
    assert found is not None and found["firedCount"] == 1


async def test_paused_schedules_do_not_fire(store: Store) -> None:
    await store.put_schedule("s", schedule(every=60), now=T0)
    await store.pause_schedule("s", None)
    assert (await store.fire_due_schedules(now=at(600))).outcomes == {}
    assert await store.next_schedule_fire_at() is None


async def test_end_at_ends_the_schedule(store: Store) -> None:
    await store.put_schedule(
        "s", schedule(every=60, overlap="allow", endAt="2030-01-01T10:02:00Z"), now=T0
    )
    await store.fire_due_schedules(now=at(60))
    await store.fire_due_schedules(now=at(120))
    found = await store.get_schedule("s")
    assert found is not None and found["firedCount"] == 2 and found["nextRunAt"] is None


# --------------------------------------------------------------------------- the key, by hand


@pytest.mark.postgres
async def test_the_unique_key_decides_a_race_the_lock_does_not_see(pg: Any) -> None:
    """Another transaction takes the (schedule, tick) key without locking the schedule:
    the firer's insert waits on the key, and once that transaction commits it fires
    nothing for the tick."""
    store, raw, database = pg
    await store.put_schedule("s", schedule(every=60), now=T0)
    tick = at(60)
    tx = raw.transaction()
    await tx.start()
    await raw.execute(
        "INSERT INTO schedule_runs (schedule_id, scheduled_at, fired_at, workflow_id, outcome)"
        " VALUES ('s', $1, $1, NULL, 'skipped')",
        tick,
    )
    firing = asyncio.create_task(store.fire_due_schedules(now=at(61)))
    await blocked_or_done(raw, database, firing)
    assert not firing.done()
    await tx.commit()
    report = await firing
    assert report.outcomes == {}
    assert await workflow_ids(store) == []
    found = await store.get_schedule("s")
    assert found is not None
    assert found["nextRunAt"] == "2030-01-01T10:02:00.000Z" and found["firedCount"] == 0


@pytest.mark.postgres
async def test_a_schedule_being_fired_is_skipped_by_another_firer(pg: Any) -> None:
    store, raw, _ = pg
    await store.put_schedule("s", schedule(every=60), now=T0)
    tx = raw.transaction()
    await tx.start()
    await raw.execute("SELECT 1 FROM schedules WHERE id = 's' FOR UPDATE")
    # Locked by another firer: skipped at once rather than waited for.
    report = await asyncio.wait_for(store.fire_due_schedules(now=at(61)), 5)
    assert report.outcomes == {}
    await tx.rollback()
    assert (await store.fire_due_schedules(now=at(61))).outcomes == {"fired": 1}


# --------------------------------------------------------------------------- delayed start


async def test_a_delayed_workflow_waits_in_the_database_then_starts(store: Store) -> None:
    document = await create(
        store, {"steps": [{"id": "a", "url": "http://h/a"}], "delay": 60, "timeout": 100}
    )
    assert document["status"] == "pending" and document["startedAt"] is None
    start = datetime.fromisoformat(document["startAt"])
    assert await store.claim_due(10, lease_seconds=30, now=time.time() + 3600) == []
    next_start = await store.next_start_at()
    assert next_start is not None and abs(next_start - start) < timedelta(milliseconds=1)
    start = next_start
    assert await store.start_due_workflows(now=start - timedelta(seconds=1)) == 0
    assert await store.start_due_workflows(now=start) == 1
    assert await store.start_due_workflows(now=start) == 0  # started once
    started = await store.get_workflow(document["id"])
    assert started is not None and started["status"] == "running"
    assert started["startedAt"] is not None
    events = [e["type"] for e in await store.list_events(document["id"])]
    assert events == ["workflow.created", "workflow.started", "step.started"][: len(events)]
    assert events[:2] == ["workflow.created", "workflow.started"]
    await drive(store, lambda request: ok())
    finished = await store.get_workflow(document["id"])
    assert finished is not None and finished["status"] == "completed"


async def test_a_delayed_workflow_times_out_from_its_start(store: Store) -> None:
    document = await create(
        store, {"steps": [{"id": "a", "url": "http://h/a"}], "delay": 3600, "timeout": 10}
    )
    start = await store.next_start_at()
    assert start is not None
    # Long past its timeout counted from the create, it is still only waiting.
    assert await store.expire_workflows(now=start + timedelta(hours=1)) == 0
    assert await store.start_due_workflows(now=start) == 1
    started = await store.get_workflow(document["id"])
    assert started is not None and started["startedAt"] is not None
    began = datetime.fromisoformat(started["startedAt"])
    assert await store.expire_workflows(now=began + timedelta(seconds=5)) == 0
    assert await store.expire_workflows(now=began + timedelta(seconds=11)) == 1


async def test_a_pending_workflow_is_cancelled_before_its_start(store: Store) -> None:
    document = await create(
        store,
        {
            "steps": [{"id": "a", "url": "http://h/a"}],
            "startAt": "2099-01-01T00:00:00Z",
            "onError": "http://h/err",
        },
    )
    cancelled = await store.cancel(document["id"], compensate=False)
    assert cancelled["status"] == "cancelled"
    assert await store.start_due_workflows(now=datetime(2100, 1, 1, tzinfo=UTC)) == 0
    events = [e["type"] for e in await store.list_events(document["id"])]
    assert "workflow.started" not in events and "workflow.cancelled" in events
    # Only the onError callback is owed.
    requests = await store.claim_due(10, lease_seconds=30, now=time.time() + 60)
    assert [r.kind for r in requests] == ["on_error"]


async def test_a_start_time_already_past_starts_at_once(store: Store) -> None:
    document = await create(
        store, {"steps": [{"id": "a", "url": "http://h/a"}], "startAt": "2020-01-01T00:00:00Z"}
    )
    assert document["status"] == "running" and document["startAt"] is None


# --------------------------------------------------------------------------- batch create


def diamond(workflow_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "steps": [
            {"id": "start", "url": "http://h/start"},
            {"id": "a", "url": "http://h/a", "dependsOn": ["start"]},
            {"id": "b", "url": "http://h/b", "dependsOn": ["start"]},
            {"id": "merge", "url": "http://h/merge", "dependsOn": ["a", "b"]},
        ]
    }
    if workflow_id:
        body["id"] = workflow_id
    return body


async def test_a_batch_is_stored_in_request_order_in_one_go(store: Store) -> None:
    existing = await create(store, diamond("w1"))
    items = [spec(diamond("w0")), spec(diamond("w1")), spec(diamond()), spec(diamond("w3"))]
    documents, created = await store.create_workflows(items)
    assert created
    assert [d["id"] for d in documents][:2] == ["w0", "w1"]
    assert documents[1] == existing  # the same body: answered as it is
    assert documents[2]["id"].startswith("wf_") and documents[3]["id"] == "w3"
    await drive(store, lambda request: ok())
    for document in documents:
        final = await store.get_workflow(document["id"])
        assert final is not None and final["status"] == "completed"


async def test_a_batch_with_a_conflicting_item_stores_nothing(store: Store) -> None:
    await create(store, diamond("taken"))
    other = diamond("taken")
    other["name"] = "different"
    with pytest.raises(Conflict) as refused:
        await store.create_workflows([spec(diamond("new")), spec(other)])
    assert [e.path for e in refused.value.errors] == ["workflows[1].id"]
    assert await store.get_workflow("new") is None


# --------------------------------------------------------------------------- onFailure


async def test_a_removed_failure_is_absent_from_previous_steps(store: Store) -> None:
    document = await create(
        store,
        {
            "steps": [
                {
                    "id": "gone",
                    "url": "http://h/gone",
                    "onFailure": "remove",
                    "retries": {"maxAttempts": 1},
                },
                {
                    "id": "kept",
                    "url": "http://h/kept",
                    "onFailure": "ignore",
                    "retries": {"maxAttempts": 1},
                },
                {"id": "after", "url": "http://h/after", "dependsOn": ["gone", "kept"]},
            ]
        },
    )
    refused = classify_answer(404, b"")
    sent = await drive(store, lambda r: refused if r.step_id in ("gone", "kept") else ok())
    after = next(r for r in sent if r.step_id == "after")
    assert set(after.previous_steps or {}) == {"kept"}
    final = await store.get_workflow(document["id"])
    assert final is not None and final["status"] == "completed"
    assert final["failedSteps"] == ["gone", "kept"]
    assert [s["onFailure"] for s in final["steps"]] == ["remove", "ignore", "fail"]


# --------------------------------------------------------------------------- the graph


async def test_the_graph_of_a_saga_workflow(store: Store) -> None:
    document = await create(
        store,
        {
            "saga": True,
            "onComplete": "http://h/done",
            "onError": "http://h/failed",
            "steps": [
                {"id": "reserve", "url": "http://h/reserve", "compensation": "http://h/unreserve"},
                {
                    "id": "charge",
                    "url": "http://h/charge",
                    "compensation": "http://h/refund",
                    "dependsOn": ["reserve"],
                },
                {
                    "id": "ship",
                    "url": "http://h/ship",
                    "dependsOn": ["charge"],
                    "retries": {"maxAttempts": 1},
                },
            ],
        },
    )
    before = await store.workflow_graph(document["id"])
    assert before is not None
    nodes = {n["id"]: n for n in before["nodes"]}
    assert set(nodes) == {
        "reserve",
        "charge",
        "ship",
        "reserve#compensation",
        "charge#compensation",
        "#on_complete",
        "#on_error",
    }
    assert nodes["reserve"]["status"] == "running" and nodes["ship"]["status"] == "pending"
    assert nodes["charge#compensation"] == {
        "id": "charge#compensation",
        "kind": "compensation",
        "stepId": "charge",
        "status": None,
        "attempts": 0,
        "queue": None,
        "jobId": None,
    }
    assert nodes["#on_error"]["status"] is None
    edges = {(e["from"], e["to"]) for e in before["edges"]}
    assert {
        ("reserve", "charge"),
        ("charge", "ship"),
        ("charge", "charge#compensation"),
        ("ship", "#on_complete"),
        ("ship", "#on_error"),
    } <= edges
    refused = classify_answer(404, b"")
    await drive(store, lambda r: refused if r.step_id == "ship" and r.kind == "step" else ok())
    after = await store.workflow_graph(document["id"])
    assert after is not None
    nodes = {n["id"]: n for n in after["nodes"]}
    assert nodes["ship"]["status"] == "failed" and nodes["ship"]["attempts"] == 1
    assert nodes["charge#compensation"]["status"] == "completed"
    assert nodes["charge#compensation"]["attempts"] == 1
    assert nodes["reserve#compensation"]["status"] == "completed"
    assert nodes["#on_error"]["status"] == "completed" and nodes["#on_error"]["attempts"] == 1
    assert nodes["#on_complete"]["status"] is None
    edges = {(e["from"], e["to"]) for e in after["edges"]}
    # Compensations ran in reverse completion order, then onError.
    assert {
        ("charge#compensation", "reserve#compensation"),
        ("reserve#compensation", "#on_error"),
    } <= edges
    assert await store.workflow_graph("nope") is None
    assert steps_by_id(document)["charge"]["compensation"] == "http://h/refund"


async def test_a_schedule_that_cannot_fire_does_not_hold_up_the_others(store: Store) -> None:
    from app.models import Schedule

    await store.put_schedule("bad", schedule(every=60), now=T0)
    await store.put_schedule("good", schedule(every=60), now=T0)
    # A stored body that no longer validates (as after an incompatible upgrade).
    await Schedule.filter(id="bad").update(workflow={"steps": []})
    report = await store.fire_due_schedules(now=at(61))
    assert report.outcomes == {"fired": 1}
    assert await workflow_ids(store, "good") == ["good-20300101T100100Z"]
    found = await store.get_schedule("bad")
    assert found is not None and found["firedCount"] == 0


async def test_two_puts_of_a_new_schedule_at_once_create_one(store: Store) -> None:
    answers = await asyncio.gather(
        store.put_schedule("s", schedule(every=60), now=T0),
        store.put_schedule("s", schedule(every=120), now=T0),
    )
    assert sorted(created for _, created in answers) == [False, True]
    items, _ = await store.list_schedules()
    assert [i["id"] for i in items] == ["s"]
