"""The SQL toolkit (app/store/sql.py): the same behaviour on SQLite and PostgreSQL.

Conditional writes are what the store's concurrency rule rests on: each row is
written only if its guard still holds (NULL matching NULL), a row that missed is
reported the same way on both databases, and fields a write does not name keep
their values.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from tortoise.transactions import in_transaction

from app.db import close_database, open_database
from app.errors import TransitionRejected
from app.models import Delivery, Step, Workflow
from app.store.sql import (
    Where,
    database_unavailable,
    delete_many,
    fetch,
    insert_many,
    insert_returning,
    update_many,
)

NOW = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
RETRY = {
    "maxAttempts": 3,
    "backoff": "exponential",
    "delay": 1.0,
    "maxDelay": 300.0,
    "jitter": True,
}


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[str]:
    await open_database(database_url)
    try:
        await _seed()
        yield "postgres" if database_url.startswith("postgres") else "sqlite"
    finally:
        await close_database()


async def _seed() -> None:
    await insert_many(
        Workflow,
        [
            {
                "id": "w",
                "name": None,
                "status": "running",
                "context": {},
                "saga": False,
                "fail_fast": True,
                "timeout": 60.0,
                "created_at": NOW,
                "started_at": NOW,
                "request_hash": "0" * 64,
                "open_steps": 3,
                "step_count": 3,
                "compensation_started": False,
            }
        ],
    )
    await insert_many(
        Step,
        [
            {
                "workflow_id": "w",
                "step_id": step_id,
                "position": position,
                "url": f"http://h/{step_id}",
                "depends_on": [],
                "dependents": [],
                "deps_remaining": 0,
                "status": "running" if step_id != "c" else "pending",
                "attempts": 1 if step_id != "c" else 0,
                "retry": RETRY,
                "timeout": 30.0,
                "continue_on_failure": False,
                "run_id": f"run-{step_id}",
            }
            for position, step_id in enumerate("abc")
        ],
    )


async def _steps() -> dict[str, dict[str, object]]:
    rows = await fetch(
        Step,
        ("step_id", "status", "attempts", "result", "completed_at"),
        Where(Step).eq("workflow_id", "w"),
    )
    return {row.step_id: vars(row) for row in rows}


async def _delivery(lease_owner: str | None, attempt: int = 1, step_id: str = "a") -> int:
    [row] = await insert_returning(
        Delivery,
        [
            {
                "workflow_id": "w",
                "step_id": step_id,
                "kind": "step",
                "attempt": attempt,
                "message_id": f"msg_{step_id}",
                "due_at": time.time(),
                "claimed": lease_owner is not None,
                "awaiting": False,
                "lease_owner": lease_owner,
                "lease_until": time.time() + 30 if lease_owner else None,
                "url": "http://h/a",
            }
        ],
        ("id",),
    )
    return int(row["id"])


async def test_updates_are_conditional_and_touch_only_named_fields(db: str) -> None:
    async with in_transaction():
        matched = await update_many(
            Step,
            [
                (
                    {"workflow_id": "w", "step_id": "a"},
                    {"status": "running", "attempts": 1, "run_id": "run-a"},
                    {"status": "completed", "result": {"n": 1}, "completed_at": NOW},
                ),
                (
                    {"workflow_id": "w", "step_id": "b"},
                    {"status": "running", "attempts": 1, "run_id": "run-b"},
                    {"status": "completed", "result": {"n": 2}, "completed_at": NOW},
                ),
                (
                    {"workflow_id": "w", "step_id": "c"},
                    {"status": "pending"},
                    {"deps_remaining": 0},
                ),
            ],
        )
    assert sorted(matched) == [("w", "a"), ("w", "b"), ("w", "c")]
    steps = await _steps()
    assert steps["a"]["status"] == "completed" and steps["a"]["result"] == {"n": 1}
    assert steps["b"]["result"] == {"n": 2}
    assert steps["a"]["completed_at"] == NOW
    assert steps["c"]["status"] == "pending" and steps["c"]["completed_at"] is None


async def test_an_update_whose_guard_moved_is_rejected_on_both_databases(db: str) -> None:
    rows = [
        (
            {"workflow_id": "w", "step_id": "a"},
            {"status": "running", "attempts": 2},
            {"status": "failed"},
        ),
        ({"workflow_id": "w", "step_id": "c"}, {"status": "pending"}, {"attempts": 7}),
    ]
    with pytest.raises(TransitionRejected, match="1 of 1 steps rows changed under us"):
        async with in_transaction():
            await update_many(Step, rows)
    # Rolled back: neither row changed.
    steps = await _steps()
    assert steps["a"]["status"] == "running" and steps["c"]["attempts"] == 0


async def test_a_partial_update_answers_the_rows_that_matched_where_it_can(db: str) -> None:
    rows = [
        ({"workflow_id": "w", "step_id": "a"}, {"status": "retrying"}, {"attempts": 5}),
        ({"workflow_id": "w", "step_id": "c"}, {"status": "pending"}, {"attempts": 7}),
    ]
    if db == "sqlite":
        # SQLite cannot say which row of a batch missed.
        with pytest.raises(TransitionRejected):
            async with in_transaction():
                await update_many(Step, rows, partial=True)
        return
    async with in_transaction():
        assert await update_many(Step, rows, partial=True) == [("w", "c")]
    steps = await _steps()
    assert steps["a"]["attempts"] == 1 and steps["c"]["attempts"] == 7


async def test_guards_compare_null_with_null(db: str) -> None:
    free = await _delivery(None)
    async with in_transaction():
        await update_many(
            Delivery, [({"id": free}, {"lease_owner": None, "attempt": 1}, {"attempt": 2})]
        )
    with pytest.raises(TransitionRejected):
        async with in_transaction():
            await update_many(
                Delivery, [({"id": free}, {"lease_owner": "someone"}, {"attempt": 3})]
            )
    [row] = await fetch(Delivery, ("attempt",), Where(Delivery).eq("id", free))
    assert row.attempt == 2


async def test_deletes_are_conditional_on_both_databases(db: str) -> None:
    free = await _delivery(None)
    leased = await _delivery("baton-other", step_id="b")
    async with in_transaction():
        await delete_many(Delivery, [({"id": free}, {"attempt": 1, "lease_owner": None})])
    # A row claimed since it was read (leased now) is not deleted: the caller must
    # look again.
    with pytest.raises(TransitionRejected, match="1 of 1 deliveries rows changed under us"):
        async with in_transaction():
            await delete_many(Delivery, [({"id": leased}, {"attempt": 1, "lease_owner": None})])
    with pytest.raises(TransitionRejected):
        async with in_transaction():
            await delete_many(
                Delivery, [({"id": leased}, {"attempt": 2, "lease_owner": "baton-other"})]
            )
    left = await fetch(Delivery, ("id",), Where(Delivery).eq("workflow_id", "w"))
    assert [row.id for row in left] == [leased]
    async with in_transaction():
        await delete_many(
            Delivery, [({"id": leased}, {"attempt": 1, "lease_owner": "baton-other"})]
        )
    assert await fetch(Delivery, ("id",), Where(Delivery).eq("workflow_id", "w")) == []


async def test_insert_returning_answers_every_row_in_order(db: str) -> None:
    ids = [await _delivery(None, step_id=s) for s in "abc"]
    assert ids == sorted(ids) and len(set(ids)) == 3


def test_what_counts_as_the_database_being_unavailable() -> None:
    import sqlite3

    from tortoise.exceptions import OperationalError, TransactionManagementError

    locked = OperationalError(sqlite3.OperationalError("database is locked"))
    assert database_unavailable(locked)
    assert database_unavailable(TransactionManagementError("begin failed"))
    assert database_unavailable(ConnectionRefusedError())
    wrapped = RuntimeError("settle failed")
    wrapped.__cause__ = locked
    assert database_unavailable(wrapped)
    assert not database_unavailable(OperationalError("no such column: x"))
    assert not database_unavailable(ValueError("bad"))
