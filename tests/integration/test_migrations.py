"""Upgrading a database through the migrations keeps every row, index and reference.

A database is migrated to ``0001_initial`` only, filled with raw SQL the way the
server at that version wrote it (a workflow with steps, a due delivery, an attempt
and events), then opened the way the server opens it (every pending migration is
applied). On SQLite a table rebuild would drop indexes and, foreign keys being on,
cascade-delete the children of ``workflows``: this catches both.
"""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from tortoise import Tortoise, connections
from tortoise.migrations.api import migrate

from app.db import close_database, open_database, tortoise_config
from app.engine import classify_answer
from app.errors import Conflict
from app.schemas import canonical_json, parse_create_request
from app.store import Report, Store

TABLES = ("workflows", "steps", "deliveries", "attempts", "events", "server_secrets")
NOW = "2026-01-01 00:00:00+00:00"
#: A completion number as servers before migration 0003 wrote them (time.time_ns()).
OLD_COMPLETION = 1_767_225_600_123_456_789


def _connection_name(database_url: str) -> str:
    return "sqlite" if database_url.startswith("sqlite") else "postgres"


def _rows_at_0001(due_at: float) -> list[str]:
    """What a server at migration 0001 stored for a running two-step workflow."""
    retry = (
        '{"maxAttempts": 3, "backoff": "exponential", "delay": 1.0, "maxDelay": 300.0,'
        ' "jitter": true}'
    )
    return [
        "INSERT INTO workflows (id, name, status, context, saga, fail_fast, timeout, on_complete,"
        " on_error, created_at, started_at, completed_at, deadline_at, error, request_hash,"
        " idempotency_key, open_steps, failed_step, step_count, end_reason, compensation_started)"
        f" VALUES ('old-1', 'legacy', 'running', '{{\"n\": 1}}', false, true, 86400, NULL, NULL,"
        f" '{NOW}', '{NOW}', NULL, '2099-01-01 00:00:00+00:00', NULL, '{'0' * 64}', 'legacy-key',"
        " 2, NULL, 3, NULL, false)",
        "INSERT INTO steps (workflow_id, step_id, position, url, depends_on, dependents,"
        " deps_remaining, status, attempts, retry, timeout, compensation, condition,"
        " continue_on_failure, started_at, completed_at, completion_seq, result, error,"
        " compensation_status, run_id) VALUES"
        f" ('old-1', 'a', 0, 'http://h/a', '[]', '[\"b\"]', 0, 'running', 0, '{retry}', 300,"
        " NULL, NULL, false, NULL, NULL, NULL, NULL, NULL, NULL, 'runa'),"
        # continueOnFailure: true, which is onFailure "ignore" from migration 0005 on.
        f" ('old-1', 'b', 1, 'http://h/b', '[\"a\"]', '[]', 1, 'pending', 0, '{retry}', 300,"
        " NULL, NULL, true, NULL, NULL, NULL, NULL, NULL, NULL, 'runb'),"
        # Completed before the upgrade: numbered by the clock of its day, in nanoseconds.
        f" ('old-1', 'z', 2, 'http://h/z', '[]', '[]', 0, 'completed', 1, '{retry}', 300,"
        f" NULL, NULL, false, '{NOW}', '{NOW}', {OLD_COMPLETION}, '1', NULL, NULL, 'runz')",
        "INSERT INTO deliveries (workflow_id, step_id, kind, attempt, message_id, due_at, started,"
        " awaiting, lease_owner, lease_until, payload, url) VALUES"
        f" ('old-1', 'a', 'step', 1, 'msg_old', {due_at}, false, false, NULL, NULL, NULL,"
        " 'http://h/a')",
        "INSERT INTO attempts (workflow_id, step_id, kind, number, message_id, started_at,"
        " duration_ms, http_status, outcome, error, response_excerpt) VALUES"
        f" ('old-1', 'a', 'step', 1, 'msg_old', '{NOW}', 1.5, 503, 'failed', NULL, 'busy')",
        "INSERT INTO events (workflow_id, step_id, type, at, data) VALUES"
        f" ('old-1', NULL, 'workflow.created', '{NOW}', '{{}}'),"
        f" ('old-1', NULL, 'workflow.started', '{NOW}', '{{}}'),"
        f" ('old-1', 'a', 'step.started', '{NOW}', '{{\"attempt\": 1}}')",
        "INSERT INTO server_secrets (name, value, created_at)"
        f" VALUES ('callback-token', 's', '{NOW}')",
    ]


async def _counts(name: str) -> dict[str, int]:
    conn = connections.get(name)
    counts = {}
    for table in TABLES:
        _, rows = await conn.execute_query(f"SELECT COUNT(*) AS n FROM {table}")
        counts[table] = int(dict(rows[0])["n"])
    return counts


async def _indexes(name: str) -> set[str]:
    conn = connections.get(name)
    if name == "sqlite":
        _, rows = await conn.execute_query(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_%'"
        )
        return {str(dict(r)["name"]) for r in rows}
    _, rows = await conn.execute_query(
        "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'"
    )
    return {str(dict(r)["indexname"]) for r in rows}


async def _foreign_keys(name: str) -> set[tuple[str, str]]:
    """(table, referenced table) of every foreign key."""
    conn = connections.get(name)
    found = set()
    if name == "sqlite":
        # Tables that do not exist yet list no keys.
        for table in (*TABLES, "schedule_runs"):
            _, rows = await conn.execute_query(f"PRAGMA foreign_key_list({table})")
            found.update((table, str(dict(r)["table"])) for r in rows)
        return found
    _, rows = await conn.execute_query(
        "SELECT conrelid::regclass::text AS source, confrelid::regclass::text AS target"
        " FROM pg_constraint WHERE contype = 'f'"
    )
    return {(str(dict(r)["source"]), str(dict(r)["target"])) for r in rows}


async def test_upgrading_from_0001_keeps_every_row_index_and_reference(
    database_url: str,
) -> None:
    name = _connection_name(database_url)
    config = tortoise_config(database_url)
    await migrate(config=config, target="models.0001_initial")
    try:
        conn = connections.get(name)
        for statement in _rows_at_0001(due_at=time.time() - 1):
            await conn.execute_query(statement)
        before = await _counts(name)
        indexes_before = await _indexes(name)
        references_before = await _foreign_keys(name)
    finally:
        await Tortoise.close_connections()
        await Tortoise._reset_apps()
    assert before == {
        "workflows": 1,
        "steps": 3,
        "deliveries": 1,
        "attempts": 1,
        "events": 3,
        "server_secrets": 1,
    }

    await open_database(database_url)  # what the server does at start-up: migrate, open
    try:
        assert await _counts(name) == before
        indexes_after = await _indexes(name)
        assert indexes_before <= indexes_after
        assert len(indexes_after - indexes_before) >= 3  # workflows, api_keys, namespace_secrets
        # Only the new schedule_runs -> schedules reference is added.
        assert await _foreign_keys(name) == references_before | {("schedule_runs", "schedules")}
        store = Store()
        # The old workflow is the default namespace's, and runs on.
        document = await store.get_workflow("old-1")
        assert document is not None
        assert (document["id"], document["status"], document["context"]) == (
            "old-1",
            "running",
            {"n": 1},
        )
        # Started at once, fired by no schedule; continueOnFailure read as onFailure.
        assert (document["startAt"], document["scheduleId"], document["scheduledAt"]) == (
            None,
            None,
            None,
        )
        assert [(s["onFailure"], s["continueOnFailure"]) for s in document["steps"]] == [
            ("fail", False),
            ("ignore", True),
            ("fail", False),
        ]
        items, _ = await store.list_workflows(namespace="default")
        assert [i["id"] for i in items] == ["old-1"]
        assert await store.list_workflows(namespace="acme") == ([], None)
        step = await store.get_step("old-1", "a")
        assert step is not None and step["attemptLog"][0]["responseExcerpt"] == "busy"
        assert len(await store.list_events("old-1")) == 3
        await _finish(store)
        final = await store.get_workflow("old-1")
        assert final is not None and final["status"] == "completed"
        # Steps completed after the upgrade are numbered after those completed before.
        assert final["completedSteps"] == ["z", "a", "b"]
        # The legacy Idempotency-Key is still the default namespace's (another body: 409).
        with pytest.raises(Conflict, match="'old-1'"):
            await _create(store, {"steps": [{"id": "z", "url": "http://h/z"}]}, "legacy-key")
        if name == "postgres":
            assert await _widths() == {
                ("workflows", "id"): 192,
                ("workflows", "idempotency_key"): 320,
                ("steps", "workflow_id"): 192,
                ("deliveries", "workflow_id"): 192,
                ("attempts", "workflow_id"): 192,
                ("events", "workflow_id"): 192,
                ("schedule_runs", "workflow_id"): 192,
            }
        # A namespace's widest id fits next to the old rows.
        await _create_long(store)
    finally:
        await close_database()


async def _finish(store: Store) -> None:
    for _ in range(10):
        reqs = await store.claim_due(10, lease_seconds=30, now=time.time() + 3600)
        if not reqs:
            return
        await store.settle(
            [
                Report(
                    request=j,
                    result=classify_answer(200, b'{"success": true}'),
                    started_at=datetime.now(UTC),
                    duration_ms=1.0,
                )
                for j in reqs
            ]
        )


async def _widths() -> dict[tuple[str, str], int]:
    conn = connections.get("postgres")
    _, rows = await conn.execute_query(
        "SELECT table_name, column_name, character_maximum_length AS width"
        " FROM information_schema.columns"
        " WHERE (table_name = 'workflows' AND column_name IN ('id', 'idempotency_key'))"
        " OR column_name = 'workflow_id'"
    )
    return {
        (str(dict(r)["table_name"]), str(dict(r)["column_name"])): int(dict(r)["width"])
        for r in rows
    }


async def _create(
    store: Store, body: dict[str, Any], key: str | None, namespace: str = "default"
) -> dict[str, Any]:
    model, document = parse_create_request(
        orjson.dumps(body), check_url=lambda url: None, check_condition=lambda source: None
    )
    digest = hashlib.sha256(canonical_json(document)).hexdigest()
    created, _ = await store.create_workflow(
        model, request_hash=digest, idempotency_key=key, namespace=namespace
    )
    return created


async def _create_long(store: Store) -> None:
    body: dict[str, Any] = {"id": "i" * 128, "steps": [{"id": "a", "url": "http://h/a"}]}
    created = await _create(store, body, "k" * 255, namespace="n" * 63)
    assert created["id"] == "i" * 128


@pytest.mark.parametrize("step", ["0001_initial", None])
async def test_a_fresh_database_migrates_to_every_step(database_url: str, step: str | None) -> None:
    target = f"models.{step}" if step else None
    await migrate(config=tortoise_config(database_url), target=target)
    await Tortoise.close_connections()
    await Tortoise._reset_apps()
    await open_database(database_url)
    await close_database()
