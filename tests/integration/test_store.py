"""The store on SQLite and PostgreSQL: create, claim, settle, readiness, failure, idempotency.

These drive the store directly with fabricated answers (no HTTP), so every rule of
DESIGN §5 that lives in the database is checked on both databases.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from app.db import close_database, open_database
from app.engine import AttemptResult, DeliveryKind, StepErrorCode, classify_answer
from app.errors import Conflict, Gone, NotFound
from app.store import OutboundRequest, Store
from app.tokens import CallbackClaim
from tests.integration.storekit import create, drive, ok, report, spec, steps_by_id

pytestmark = pytest.mark.asyncio


async def test_chain_runs_in_order_and_passes_results(store: Store) -> None:
    await create(
        store,
        {
            "id": "chain",
            "steps": [
                {"id": "a", "url": "http://h/a"},
                {"id": "b", "url": "http://h/b", "dependsOn": ["a"]},
                {"id": "c", "url": "http://h/c", "dependsOn": ["b"]},
            ],
            "context": {"n": 1},
        },
    )
    sent = await drive(store, lambda req: ok({"from": req.step_id}))
    assert [j.step_id for j in sent] == ["a", "b", "c"]
    assert sent[2].previous_steps == {
        "a": {"status": "completed", "result": {"from": "a"}},
        "b": {"status": "completed", "result": {"from": "b"}},
    }
    assert sent[0].context == {"n": 1}
    document = await store.get_workflow("chain")
    assert document is not None
    assert document["status"] == "completed"
    assert document["completedSteps"] == ["a", "b", "c"]
    assert document["results"] == {s: {"from": s} for s in "abc"}
    assert all(s["attempts"] == 1 for s in document["steps"])


async def test_conditions_are_decided_at_the_start_and_as_dependencies_settle(
    store: Store,
) -> None:
    await create(
        store,
        {
            "id": "when",
            "context": {"total": 42},
            "steps": [
                {"id": "a", "url": "http://h/a", "when": "context.total > 0"},
                {"id": "skipped", "url": "http://h/s", "when": "context.total > 100"},
                # Ready at the start: its only dependency is skipped at once.
                {
                    "id": "after-skip",
                    "url": "http://h/as",
                    "dependsOn": ["skipped"],
                    "when": "steps.skipped.status == 'skipped'",
                },
                {
                    "id": "b",
                    "url": "http://h/b",
                    "dependsOn": ["a"],
                    "when": "steps.a.result.go == true",
                },
                {
                    "id": "c",
                    "url": "http://h/c",
                    "dependsOn": ["a"],
                    "when": "steps.a.result.x > 1",
                },
            ],
            "failFast": False,
        },
    )
    sent = await drive(store, lambda req: ok({"go": True} if req.step_id == "a" else None))
    assert sorted(j.step_id or "" for j in sent) == ["a", "after-skip", "b"]
    document = await store.get_workflow("when")
    assert document is not None
    statuses = {s["id"]: s["status"] for s in document["steps"]}
    assert statuses == {
        "a": "completed",
        "skipped": "skipped",
        "after-skip": "completed",
        "b": "completed",
        "c": "failed",
    }
    error = steps_by_id(document)["c"]["error"]
    assert error["code"] == "condition_error"
    assert error["message"] == '`when` could not be evaluated: no such key: "x"'


async def test_parallel_roots_are_claimed_together(store: Store) -> None:
    await create(
        store,
        {
            "id": "fan",
            "steps": [
                {"id": "p1", "url": "http://h/1"},
                {"id": "p2", "url": "http://h/2"},
                {"id": "p3", "url": "http://h/3"},
                {"id": "join", "url": "http://h/j", "dependsOn": ["p1", "p2", "p3"]},
            ],
        },
    )
    first = await store.claim_due(100, lease_seconds=30)
    assert sorted(j.step_id for j in first) == ["p1", "p2", "p3"]
    await store.settle([report(j, ok(j.step_id)) for j in first])
    second = await store.claim_due(100, lease_seconds=30)
    assert [j.step_id for j in second] == ["join"]
    assert set(second[0].previous_steps or {}) == {"p1", "p2", "p3"}


async def test_failure_cancels_downstream_and_fails_workflow(store: Store) -> None:
    await create(
        store,
        {
            "id": "doomed",
            "steps": [
                {"id": "a", "url": "http://h/a"},
                {"id": "b", "url": "http://h/b", "dependsOn": ["a"]},
                {"id": "c", "url": "http://h/c", "dependsOn": ["b"]},
            ],
            "onError": "http://h/failed",
            "onComplete": "http://h/done",
        },
    )
    sent = await drive(store, lambda req: classify_answer(404, b"") if req.step_id else ok())
    kinds = [(j.kind, j.step_id) for j in sent]
    assert kinds == [(DeliveryKind.STEP, "a"), (DeliveryKind.ON_ERROR, None)]
    document = await store.get_workflow("doomed")
    assert document is not None
    assert document["status"] == "failed"
    assert document["error"]["code"] == "step_failed"
    assert document["error"]["stepId"] == "a"
    steps = steps_by_id(document)
    assert steps["a"]["status"] == "failed"
    assert steps["a"]["error"]["code"] == "http_error"
    assert steps["a"]["error"]["httpStatus"] == 404
    assert steps["b"]["status"] == "cancelled"
    assert steps["c"]["status"] == "cancelled"
    callback = sent[1].payload
    assert callback is not None
    assert callback["status"] == "failed"
    assert callback["failedSteps"] == ["a"]


async def test_retries_keep_the_webhook_id_and_store_due_times(store: Store) -> None:
    await create(
        store,
        {
            "id": "flaky",
            "steps": [
                {
                    "id": "a",
                    "url": "http://h/a",
                    "retries": {"maxAttempts": 3, "delay": 5, "backoff": "fixed", "jitter": False},
                }
            ],
        },
    )
    [first] = await store.claim_due(10, lease_seconds=30)
    before = time.time()
    await store.settle([report(first, classify_answer(503, b""))])
    # The next attempt is due 5 s from now, not before.
    assert await store.claim_due(10, lease_seconds=30) == []
    due = await store.next_due_at()
    assert due is not None and before + 4.9 <= due <= time.time() + 5.1
    document = await store.get_workflow("flaky")
    assert document is not None
    assert steps_by_id(document)["a"]["status"] == "retrying"
    [second] = await store.claim_due(10, lease_seconds=30, now=due + 0.01)
    assert second.attempt == 2
    assert second.message_id == first.message_id
    await store.settle([report(second, ok("fine"))])
    document = await store.get_workflow("flaky")
    assert document is not None
    assert document["status"] == "completed"
    assert steps_by_id(document)["a"]["attempts"] == 2
    step = await store.get_step("flaky", "a")
    assert step is not None
    assert [a["number"] for a in step["attemptLog"]] == [1, 2]
    assert step["attemptLog"][0]["httpStatus"] == 503


async def test_expired_lease_is_claimed_again_with_the_same_id(store: Store) -> None:
    await create(store, {"id": "lease", "steps": [{"id": "a", "url": "http://h/a"}]})
    [req] = await store.claim_due(10, lease_seconds=1)
    # A live lease hides the row from everyone else.
    other = Store()
    assert await other.claim_due(10, lease_seconds=30) == []
    [again] = await other.claim_due(10, lease_seconds=30, now=time.time() + 2)
    assert again.takeover
    assert again.message_id == req.message_id
    assert again.attempt == req.attempt
    await other.settle([report(again, ok())])
    # The first process answers late: recorded, but it changes nothing.
    await store.settle([report(req, ok("late"))])
    document = await store.get_workflow("lease")
    assert document is not None
    assert document["status"] == "completed"
    assert document["results"] == {"a": None}


async def test_idempotent_create(store: Store) -> None:
    body = {"id": "same", "steps": [{"id": "a", "url": "http://h/a"}]}
    first = await create(store, body)
    model, digest = spec(body)
    again, created = await store.create_workflow(model, request_hash=digest)
    assert not created
    assert again["id"] == first["id"]
    with pytest.raises(Conflict):
        await create(store, {**body, "context": {"different": True}})
    keyed = {"steps": [{"id": "a", "url": "http://h/a"}]}
    one = await create(store, keyed, key="key-1")
    two = await create(store, keyed, key="key-1")
    assert one["id"] == two["id"]
    assert one["id"].startswith("wf_")
    with pytest.raises(Conflict):
        await create(store, {"steps": [{"id": "b", "url": "http://h/b"}]}, key="key-1")


async def test_list_is_newest_first_with_cursor(store: Store) -> None:
    for i in range(5):
        await create(
            store, {"id": f"w{i}", "name": "batch", "steps": [{"id": "a", "url": "http://h"}]}
        )
    page, cursor = await store.list_workflows(limit=2)
    assert [w["id"] for w in page] == ["w4", "w3"]
    assert cursor is not None
    page2, cursor2 = await store.list_workflows(limit=2, cursor=cursor)
    assert [w["id"] for w in page2] == ["w2", "w1"]
    page3, cursor3 = await store.list_workflows(limit=2, cursor=cursor2)
    assert [w["id"] for w in page3] == ["w0"]
    assert cursor3 is None
    running, _ = await store.list_workflows(status="running", name="batch")
    assert len(running) == 5
    assert (await store.list_workflows(status="completed"))[0] == []


async def test_events_in_order(store: Store) -> None:
    await create(
        store,
        {"id": "ev", "steps": [{"id": "a", "url": "http://h/a"}], "onComplete": "http://h/done"},
    )
    await drive(store, lambda req: ok())
    types = [e["type"] for e in await store.list_events("ev")]
    assert types == [
        "workflow.created",
        "workflow.started",
        "step.started",
        "step.completed",
        "workflow.completed",
        "callback.delivered",
    ]


async def test_dependencies_document(store: Store) -> None:
    await create(
        store,
        {
            "id": "deps",
            "steps": [
                {"id": "a", "url": "http://h/a"},
                {"id": "b", "url": "http://h/b", "dependsOn": ["a"]},
                {"id": "c", "url": "http://h/c", "dependsOn": ["a"]},
            ],
        },
    )
    assert await store.get_dependencies("deps", "a") == {
        "dependsOn": [],
        "dependedOnBy": ["b", "c"],
    }
    assert await store.get_dependencies("deps", "b") == {"dependsOn": ["a"], "dependedOnBy": []}
    assert await store.get_dependencies("deps", "zz") is None


async def test_claiming_a_step_past_the_workflow_deadline_times_the_workflow_out(
    store: Store,
) -> None:
    await create(
        store,
        {
            "id": "late",
            "timeout": 0.05,
            "steps": [{"id": "a", "url": "http://h/a"}, {"id": "b", "url": "http://h/b"}],
            "onError": "http://h/failed",
        },
    )
    await asyncio.sleep(0.1)
    reqs = await store.claim_due(10, lease_seconds=30)
    # Not one step is sent; only the onError callback is due.
    assert [j.kind for j in reqs] == []
    document = await store.get_workflow("late")
    assert document is not None
    assert document["status"] == "failed"
    assert document["error"]["code"] == "workflow_timeout"
    assert {s["status"] for s in document["steps"]} == {"cancelled"}
    [callback] = await store.claim_due(10, lease_seconds=30)
    assert callback.kind is DeliveryKind.ON_ERROR


async def test_sweep_expires_workflows_whose_steps_are_in_flight(store: Store) -> None:
    await create(
        store,
        {
            "id": "slow",
            "timeout": 60,
            "steps": [
                {"id": "a", "url": "http://h/a"},
                {"id": "b", "url": "http://h/b", "dependsOn": ["a"]},
            ],
        },
    )
    [req] = await store.claim_due(10, lease_seconds=30)
    # The sweep runs as if the deadline had passed while a is on the wire.
    later = datetime.now(UTC) + timedelta(seconds=120)
    assert await store.expire_workflows() == 0
    assert await store.expire_workflows(now=later) == 1
    document = await store.get_workflow("slow")
    assert document is not None
    # a is on the wire: the workflow fails once it answers; b never starts.
    assert document["status"] == "running"
    assert {s["id"]: s["status"] for s in document["steps"]} == {"a": "running", "b": "cancelled"}
    await store.settle([report(req, ok())])
    document = await store.get_workflow("slow")
    assert document is not None
    assert document["status"] == "failed"
    assert document["error"]["code"] == "workflow_timeout"
    assert document["completedSteps"] == ["a"]


async def test_async_step_completes_through_its_callback(store: Store) -> None:
    await create(
        store,
        {
            "id": "async",
            "steps": [
                {"id": "a", "url": "http://h/a", "timeout": 30},
                {"id": "b", "url": "http://h/b", "dependsOn": ["a"]},
            ],
        },
    )
    [req] = await store.claim_due(10, lease_seconds=30)
    await store.settle([report(req, classify_answer(202, b'{"async": true}'))])
    assert await store.claim_due(10, lease_seconds=30) == []  # parked until its callback
    claim = CallbackClaim("async", "a", req.run_id or "", req.attempt)
    beat = await store.heartbeat(claim)
    assert beat["stepId"] == "a" and beat["deadline"].endswith("Z")
    answer = await store.async_result(claim, orjson.dumps({"success": True, "result": {"n": 1}}))
    assert answer == {"accepted": True, "stepId": "a", "status": "completed"}
    [next_job] = await store.claim_due(10, lease_seconds=30)
    assert next_job.step_id == "b"
    assert next_job.previous_steps == {"a": {"status": "completed", "result": {"n": 1}}}
    # The same token again: the step no longer waits for it.
    with pytest.raises(Gone):
        await store.async_result(claim, orjson.dumps({"success": True}))
    step = await store.get_step("async", "a")
    assert step is not None
    assert [a["outcome"] for a in step["attemptLog"]] == ["async", "callback.completed"]


async def test_a_callback_token_is_accepted_once_even_when_sent_twice_at_once(
    store: Store,
) -> None:
    await create(store, {"id": "async-twice", "steps": [{"id": "a", "url": "http://h/a"}]})
    [req] = await store.claim_due(10, lease_seconds=30)
    await store.settle([report(req, classify_answer(202, b'{"async": true}'))])
    claim = CallbackClaim("async-twice", "a", req.run_id or "", req.attempt)

    outcomes = await asyncio.gather(
        *(
            store.async_result(claim, orjson.dumps({"success": True, "result": n}))
            for n in range(4)
        ),
        return_exceptions=True,
    )

    accepted = [o for o in outcomes if isinstance(o, dict)]
    assert len(accepted) == 1, outcomes
    assert all(isinstance(o, Gone) for o in outcomes if not isinstance(o, dict)), outcomes
    step = await store.get_step("async-twice", "a")
    assert step is not None
    assert [a["outcome"] for a in step["attemptLog"]] == ["async", "callback.completed"]
    assert step["result"] == outcomes.index(accepted[0])


async def test_async_failure_is_retried_and_a_stale_run_is_refused(store: Store) -> None:
    await create(
        store,
        {
            "id": "async-fail",
            "steps": [
                {"id": "a", "url": "http://h/a", "retries": {"delay": 0, "jitter": False}},
            ],
        },
    )
    [req] = await store.claim_due(10, lease_seconds=30)
    await store.settle([report(req, classify_answer(202, b'{"async": true}'))])
    claim = CallbackClaim("async-fail", "a", req.run_id or "", req.attempt)
    answer = await store.async_result(claim, orjson.dumps({"success": False, "error": "boom"}))
    assert answer["status"] == "retrying"
    [retry] = await store.claim_due(10, lease_seconds=30)
    assert retry.attempt == 2
    with pytest.raises(Gone):
        await store.heartbeat(claim)  # attempt 1's token is stale now
    wrong_run = CallbackClaim("async-fail", "a", "another-run", 2)
    with pytest.raises(Gone):
        await store.async_result(wrong_run, orjson.dumps({"success": True}))
    with pytest.raises(NotFound):
        await store.async_result(
            CallbackClaim("async-fail", "zz", "r", 1), orjson.dumps({"success": True})
        )


async def test_async_deadline_passing_is_a_timeout(store: Store) -> None:
    await create(
        store,
        {
            "id": "async-late",
            "steps": [
                {"id": "a", "url": "http://h/a", "timeout": 0.05, "retries": {"maxAttempts": 1}}
            ],
        },
    )
    [req] = await store.claim_due(10, lease_seconds=30)
    await store.settle([report(req, classify_answer(202, b'{"async": true}'))])
    [expired] = await store.claim_due(10, lease_seconds=30, now=time.time() + 1)
    assert expired.expired
    await store.settle(
        [report(expired, AttemptResult.failure(StepErrorCode.TIMEOUT, "late", retryable=True))]
    )
    document = await store.get_workflow("async-late")
    assert document is not None
    assert document["status"] == "failed"
    assert document["steps"][0]["error"]["code"] == "timeout"


async def test_new_due_work_notifies_other_processes(pg_url: str) -> None:
    """On PostgreSQL a commit that makes deliveries due sends NOTIFY baton_due."""

    from app.notify import CHANNEL, PgWakeups

    await open_database(pg_url)
    woken = asyncio.Event()
    wakeups = PgWakeups(pg_url, woken.set)
    wakeups.start()
    try:
        await asyncio.wait_for(woken.wait(), 5)  # the first look after connecting
        woken.clear()
        store = Store()
        await create(store, {"id": "n", "steps": [{"id": "a", "url": "http://h/a"}]})
        await asyncio.wait_for(woken.wait(), 5)
    finally:
        await wakeups.stop()
        await close_database()
    assert CHANNEL == "baton_due"


async def test_retention_purges_finished_workflows_and_everything_of_theirs(store: Store) -> None:
    await create(store, {"id": "old", "steps": [{"id": "a", "url": "http://h/a"}]})
    await create(
        store,
        {"id": "owing", "steps": [{"id": "a", "url": "http://h/a"}], "onComplete": "http://h/x"},
    )
    await create(store, {"id": "live", "steps": [{"id": "a", "url": "http://h/a"}]})
    reqs = await store.claim_due(10, lease_seconds=30)
    await store.settle([report(j, ok()) for j in reqs if j.workflow_id != "live"])
    later = datetime.now(UTC) + timedelta(days=1)
    # "owing" still owes its onComplete callback: it is kept until that is settled.
    assert await store.purge_finished(before=later) == 1
    assert await store.get_workflow("old") is None
    assert await store.list_events("old") == []
    assert await store.get_step("old", "a") is None
    assert await store.get_workflow("owing") is not None
    assert await store.get_workflow("live") is not None
    # Nothing finished before the cut-off: nothing goes.
    assert await store.purge_finished(before=datetime.now(UTC) - timedelta(days=1)) == 0


async def test_counts_by_status(store: Store) -> None:
    await create(store, {"id": "c1", "steps": [{"id": "a", "url": "http://h/a"}]})
    counts = await store.count_by_status()
    assert counts["running"] == 1
    assert counts["completed"] == 0
    assert set(counts) >= {"pending", "compensation_failed"}


async def test_creates_that_arrive_together_are_inserted_together(store: Store) -> None:
    """Concurrent creates share a transaction (group commit); each still answers its own
    document and gets its own root requests to send."""
    handed: dict[str, list[OutboundRequest]] = {}

    async def one(i: int) -> dict[str, Any]:
        model, digest = spec(
            {
                "id": f"many-{i}",
                "steps": [
                    {"id": "root", "url": f"http://h/{i}"},
                    {"id": "next", "url": "http://h/next", "dependsOn": ["root"]},
                ],
                "context": {"i": i},
            }
        )
        document, created = await store.create_workflow(
            model,
            request_hash=digest,
            handoff=1,
            on_requests=lambda reqs: handed.setdefault(f"many-{i}", []).extend(reqs),
        )
        assert created
        return document

    documents = await asyncio.gather(*(one(i) for i in range(20)))
    assert [d["id"] for d in documents] == [f"many-{i}" for i in range(20)]
    assert [d["context"] for d in documents] == [{"i": i} for i in range(20)]
    for i in range(20):
        [req] = handed[f"many-{i}"]
        assert (req.workflow_id, req.step_id, req.url) == (f"many-{i}", "root", f"http://h/{i}")
        stored = await store.get_workflow(f"many-{i}")
        assert stored is not None
        assert steps_by_id(stored)["root"]["attempts"] == 1


async def test_the_same_id_created_twice_at_once_is_one_workflow(store: Store) -> None:
    """Two creates with one id in the same batch: the batch fails, each is tried on its
    own, and the second answers like an idempotent create (or a conflict)."""
    body = {"id": "twice", "steps": [{"id": "a", "url": "http://h/a"}]}
    other = {"id": "twice", "steps": [{"id": "b", "url": "http://h/b"}]}
    model, digest = spec(body)
    model2, digest2 = spec(other)
    results = await asyncio.gather(
        store.create_workflow(model, request_hash=digest),
        store.create_workflow(model, request_hash=digest),
        store.create_workflow(model2, request_hash=digest2),
        return_exceptions=True,
    )
    created = [r for r in results if isinstance(r, tuple) and r[1]]
    again = [r for r in results if isinstance(r, tuple) and not r[1]]
    conflicts = [r for r in results if isinstance(r, Conflict)]
    assert len(created) == 1
    assert len(again) + len(conflicts) == 2
    document = await store.get_workflow("twice")
    assert document is not None
    assert [s["id"] for s in document["steps"]] == [s["id"] for s in created[0][0]["steps"]]
    # The graph cached is the stored workflow's, whichever create won.
    assert (await store.get_dependencies("twice", document["steps"][0]["id"])) == {
        "dependsOn": [],
        "dependedOnBy": [],
    }
