"""Races between transactions, forced statement by statement.

The store's concurrency rule: lock the workflow first, then read; every conditional
write carries what it expects (steps: status, attempts, run id; deliveries: attempt,
lease owner). On PostgreSQL the other side of each race is a second connection
driven by hand: it runs the statements of a concurrent claim, settle or retry up to
its commit, the store's operation is started and seen waiting on a lock, then the
other side commits. SQLite runs one writing transaction at a time (BEGIN IMMEDIATE),
so there the same operations are checked in their sequential orders.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from app.db import close_database, open_database
from app.engine import DeliveryKind, RetryPolicy, classify_answer, classify_timeout
from app.errors import Gone
from app.store import OutboundRequest, Report, Store
from app.tokens import CallbackClaim
from tests.integration.storekit import create, ok, report, steps_by_id

ASYNC = classify_answer(202, b'{"async": true}')


@pytest.fixture
async def pg(pg_url: str) -> AsyncIterator[tuple[Store, asyncpg.Connection, str]]:
    """A store on a fresh PostgreSQL database, and a second connection to it."""
    await open_database(pg_url)
    raw = await asyncpg.connect("postgresql://" + pg_url.split("://", 1)[1])
    try:
        yield Store(), raw, pg_url.rsplit("/", 1)[1]
    finally:
        await raw.close()
        await close_database()


async def blocked_or_done(raw: asyncpg.Connection, database: str, task: asyncio.Task[Any]) -> None:
    """Wait until ``task`` waits on a lock in ``database``, or has finished."""
    deadline = time.monotonic() + 10
    while not task.done():
        waiting = await raw.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = $1 AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()",
            database,
        )
        if waiting:
            return
        assert time.monotonic() < deadline, "the operation neither waited nor finished"
        await asyncio.sleep(0.02)


async def delivery_row(raw: asyncpg.Connection, workflow_id: str) -> asyncpg.Record | None:
    return await raw.fetchrow(
        "SELECT id, attempt, due_at, awaiting, lease_owner FROM deliveries"
        " WHERE workflow_id = $1 AND kind = 'step'",
        workflow_id,
    )


async def parked_async_step(store: Store, workflow_id: str) -> OutboundRequest:
    """A one-step workflow whose step answered 202 and waits for its callback."""
    await create(
        store,
        {
            "id": workflow_id,
            "steps": [
                {
                    "id": "a",
                    "url": "http://h/a",
                    "timeout": 60,
                    "retries": {"maxAttempts": 3, "delay": 100, "jitter": False},
                }
            ],
        },
    )
    [request] = await store.claim_due(10, lease_seconds=30)
    await store.settle([report(request, ASYNC)])
    return request


async def owe_attempt_2(raw: asyncpg.Connection, workflow_id: str, delivery_id: int) -> float:
    """What a settle or callback that failed attempt 1 writes: attempt 2 is owed later."""
    retry_at = time.time() + 100
    await raw.execute(
        "UPDATE deliveries SET attempt = 2, due_at = $1, awaiting = false, claimed = false,"
        " lease_owner = NULL, lease_until = NULL WHERE id = $2",
        retry_at,
        delivery_id,
    )
    await raw.execute(
        "UPDATE steps SET status = 'retrying' WHERE workflow_id = $1 AND step_id = 'a'",
        workflow_id,
    )
    return retry_at


# ------------------------------------------------------------------- item 4


async def test_a_late_answer_cannot_delete_the_retry_now_owed(pg: Any) -> None:
    """An expired async attempt is settled while a `success: false` callback (another
    transaction) reschedules the same row as attempt 2: attempt 2 must survive."""
    store, raw, database = pg
    first = await parked_async_step(store, "late")
    await raw.execute("UPDATE deliveries SET due_at = 0 WHERE workflow_id = 'late'")
    [expired] = await store.claim_due(10, lease_seconds=30)
    assert expired.expired and expired.attempt == 1
    row = await delivery_row(raw, "late")
    assert row is not None

    # The callback's transaction, by hand: lock the workflow, reschedule attempt 2.
    callback = raw.transaction()
    await callback.start()
    await raw.execute("SELECT id FROM workflows WHERE id = 'late' FOR UPDATE")
    retry_at = await owe_attempt_2(raw, "late", row["id"])
    settling = asyncio.create_task(
        store.settle([report(expired, classify_timeout(60))], rand=lambda: 0.0)
    )
    await blocked_or_done(raw, database, settling)
    await callback.commit()
    await settling

    owed = await delivery_row(raw, "late")
    assert owed is not None, "the retry owed was deleted"
    assert owed["attempt"] == 2 and owed["due_at"] == pytest.approx(retry_at)
    document = await store.get_workflow("late")
    assert document is not None and steps_by_id(document)["a"]["status"] == "retrying"
    assert first.attempt == 1


# ------------------------------------------------------------------- item 5


async def test_cancel_does_not_drop_a_request_a_claim_is_sending(pg: Any) -> None:
    """A claim not yet committed is invisible to a cancel; the cancel's delete waits for
    its row lock, and must then see the request is in flight and leave it be."""
    store, raw, database = pg
    await create(store, {"id": "inflight", "steps": [{"id": "a", "url": "http://h/a"}]})
    row = await delivery_row(raw, "inflight")
    assert row is not None and row["lease_owner"] is None

    claim = raw.transaction()
    await claim.start()
    await raw.execute("SELECT id FROM deliveries WHERE id = $1 FOR UPDATE SKIP LOCKED", row["id"])
    await raw.execute(
        "UPDATE deliveries SET lease_owner = 'baton-other', lease_until = $1, claimed = true"
        " WHERE id = $2",
        time.time() + 30,
        row["id"],
    )
    await raw.execute(
        "UPDATE steps SET status = 'running', attempts = 1"
        " WHERE workflow_id = 'inflight' AND step_id = 'a'"
    )
    cancelling = asyncio.create_task(store.cancel("inflight", compensate=False))
    await blocked_or_done(raw, database, cancelling)
    await claim.commit()
    document = await cancelling

    # The request went out: its step is still running, its row still owed an answer.
    assert document["status"] == "cancelled"
    assert steps_by_id(document)["a"]["status"] == "running"
    owed = await delivery_row(raw, "inflight")
    assert owed is not None and owed["lease_owner"] == "baton-other"
    # The answer is recorded when it comes.
    sent = OutboundRequest(
        delivery_id=row["id"],
        workflow_id="inflight",
        workflow_name=None,
        kind=DeliveryKind.STEP,
        step_id="a",
        attempt=1,
        message_id="msg",
        url="http://h/a",
        timeout=300,
        policy=RetryPolicy(),
    )
    await store.settle([report(sent, ok({"done": True}))])
    document = await store.get_workflow("inflight")
    assert document is not None
    assert steps_by_id(document)["a"]["status"] == "completed"
    assert steps_by_id(document)["a"]["result"] == {"done": True}


# ------------------------------------------------------------------- item 6


async def test_a_heartbeat_cannot_move_the_due_time_of_the_retry(pg: Any) -> None:
    """A heartbeat racing the settle that timed attempt 1 out (and owes attempt 2)."""
    store, raw, database = pg
    request = await parked_async_step(store, "beat")
    row = await delivery_row(raw, "beat")
    assert row is not None and row["awaiting"]

    settle = raw.transaction()
    await settle.start()
    await raw.execute("SELECT id FROM workflows WHERE id = 'beat' FOR UPDATE")
    retry_at = await owe_attempt_2(raw, "beat", row["id"])
    claim = CallbackClaim("beat", "a", request.run_id or "", request.attempt)
    beating = asyncio.create_task(store.heartbeat(claim))
    await blocked_or_done(raw, database, beating)
    await settle.commit()
    with pytest.raises(Gone):
        await beating
    owed = await delivery_row(raw, "beat")
    assert owed is not None
    assert owed["attempt"] == 2 and owed["due_at"] == pytest.approx(retry_at)


async def test_a_heartbeat_after_the_deadline_was_claimed_is_refused(store: Store) -> None:
    """Once the deadline passed and a process took the row to record the timeout, a
    heartbeat answers 410 instead of a new deadline the step would not keep."""
    request = await parked_async_step(store, "expired")
    claim = CallbackClaim("expired", "a", request.run_id or "", request.attempt)
    assert (await store.heartbeat(claim))["stepId"] == "a"
    [expired] = await store.claim_due(10, lease_seconds=30, now=time.time() + 3600)
    assert expired.expired
    with pytest.raises(Gone, match="deadline has passed"):
        await store.heartbeat(claim)
    await store.settle([report(expired, classify_timeout(60))], rand=lambda: 0.0)
    document = await store.get_workflow("expired")
    assert document is not None and steps_by_id(document)["a"]["status"] == "retrying"


# ------------------------------------------------------------------- item 7


async def test_saga_order_is_the_order_the_database_gave_whatever_the_clocks(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes settle two steps; the first one's clock is an hour ahead. Reverse
    completion order is still the order in which the database recorded them."""
    await create(
        store,
        {
            "id": "skew",
            "saga": True,
            "steps": [
                {"id": "a", "url": "http://h/a", "compensation": "http://h/undo-a"},
                {"id": "b", "url": "http://h/b", "compensation": "http://h/undo-b"},
                {
                    "id": "c",
                    "url": "http://h/c",
                    "dependsOn": ["a", "b"],
                    "retries": {"maxAttempts": 1},
                },
            ],
        },
    )
    other = Store(owner="baton-skewed")
    requests = {r.step_id: r for r in await store.claim_due(10, lease_seconds=30)}
    real_ns = time.time_ns
    real_time = time.time
    monkeypatch.setattr(time, "time_ns", lambda: real_ns() + 3600 * 10**9)
    monkeypatch.setattr(time, "time", lambda: real_time() + 3600)
    await other.settle([report(requests["b"], ok("b"))])
    monkeypatch.undo()
    await store.settle([report(requests["a"], ok("a"))])
    [c] = await store.claim_due(10, lease_seconds=30, now=time.time() + 7200)
    await store.settle([report(c, classify_answer(404, b""))])
    undo = await store.claim_due(10, lease_seconds=30, now=time.time() + 7200)
    assert [r.url for r in undo] == ["http://h/undo-a"]  # a completed last: undone first
    await store.settle([report(undo[0], ok())])
    [second] = await store.claim_due(10, lease_seconds=30, now=time.time() + 7200)
    assert second.url == "http://h/undo-b"
    document = await store.get_workflow("skew")
    assert document is not None and document["completedSteps"] == ["b", "a"]


# ------------------------------------------------------------------- item 8


async def test_purge_leaves_a_workflow_a_retry_is_reopening(pg: Any) -> None:
    store, raw, database = pg
    await create(store, {"id": "old", "steps": [{"id": "a", "url": "http://h/a"}]})
    [request] = await store.claim_due(10, lease_seconds=30)
    await store.settle([report(request, ok())])
    past = datetime.now(UTC) - timedelta(days=30)
    await raw.execute("UPDATE workflows SET completed_at = $1 WHERE id = 'old'", past)

    retry = raw.transaction()
    await retry.start()
    await raw.execute("SELECT id FROM workflows WHERE id = 'old' FOR UPDATE")
    await raw.execute(
        "UPDATE workflows SET status = 'running', completed_at = NULL WHERE id = 'old'"
    )
    purging = asyncio.create_task(store.purge_finished(before=datetime.now(UTC)))
    await blocked_or_done(raw, database, purging)
    await retry.commit()
    assert await purging == 0
    assert await store.workflow_exists("old")


async def test_purge_deletes_only_finished_workflows_that_owe_nothing(store: Store) -> None:
    await create(
        store,
        {
            "id": "owing",
            "onComplete": "http://h/done",
            "steps": [{"id": "a", "url": "http://h/a"}],
        },
    )
    await create(store, {"id": "done", "steps": [{"id": "a", "url": "http://h/a"}]})
    await create(store, {"id": "open", "steps": [{"id": "a", "url": "http://h/a"}]})
    for request in await store.claim_due(10, lease_seconds=30):
        if request.workflow_id != "open":
            await store.settle([report(request, ok())])
    later = datetime.now(UTC) + timedelta(seconds=5)
    assert await store.purge_finished(before=later) == 1
    assert not await store.workflow_exists("done")
    assert await store.workflow_exists("owing")  # its onComplete is still owed
    assert await store.workflow_exists("open")
    # Once the callback is delivered, it goes too.
    [callback] = await store.claim_due(10, lease_seconds=30)
    await store.settle([Report(callback, ok(), datetime.now(UTC), 1.0)])
    assert await store.purge_finished(before=later) == 1
    assert not await store.workflow_exists("owing")


# ------------------------------------------------------- cached states of settled steps


async def test_previous_steps_never_come_from_a_stale_cache(store: Store) -> None:
    """States of settled steps are cached per process for previousSteps; a retry in
    another process re-opens steps, and the next request sees their new results."""
    await create(
        store,
        {
            "id": "cache",
            "steps": [
                {"id": "a", "url": "http://h/a"},
                {"id": "b", "url": "http://h/b", "dependsOn": ["a"]},
                {"id": "c", "url": "http://h/c", "dependsOn": ["b"]},
            ],
        },
    )
    other = Store(owner="baton-other")

    async def run_step(on: Store, step_id: str, result: object) -> OutboundRequest:
        [request] = await on.claim_due(10, lease_seconds=30)
        assert request.step_id == step_id
        await on.settle([report(request, ok(result))])
        return request

    await run_step(store, "a", 1)
    await run_step(store, "b", "b1")
    [c] = await store.claim_due(10, lease_seconds=30)
    assert c.previous_steps == {
        "a": {"status": "completed", "result": 1},
        "b": {"status": "completed", "result": "b1"},
    }
    await store.settle([report(c, ok())])
    # Another process re-runs a and everything after it: a answers 2 this time.
    await other.retry_step("cache", "a")
    await run_step(other, "a", 2)
    [b] = await store.claim_due(10, lease_seconds=30)
    assert b.previous_steps == {"a": {"status": "completed", "result": 2}}


async def test_parents_mode_sends_only_direct_dependencies(store: Store) -> None:
    await create(
        store,
        {
            "id": "parents",
            "previousSteps": "parents",
            "steps": [
                {"id": "a", "url": "http://h/a"},
                {"id": "b", "url": "http://h/b", "dependsOn": ["a"]},
                {"id": "c", "url": "http://h/c", "dependsOn": ["b"], "when": "steps.a.result == 1"},
            ],
        },
    )
    [a] = await store.claim_due(10, lease_seconds=30)
    await store.settle([report(a, ok(1))])
    [b] = await store.claim_due(10, lease_seconds=30)
    assert b.previous_steps == {"a": {"status": "completed", "result": 1}}
    summary = await store.settle([report(b, ok("b"))], handoff=1)
    # `when` still sees every ancestor; the request holds only the parent.
    [c] = summary.requests
    assert c.step_id == "c" and c.previous_steps == {"b": {"status": "completed", "result": "b"}}
    document = await store.get_workflow("parents")
    assert document is not None and document["previousSteps"] == "parents"
