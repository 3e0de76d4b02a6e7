"""Baton's SQLite client (app/sqlite.py): transactions take the write lock when they
begin and run their statements on the event loop's thread."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from app.db import close_database, open_database
from app.models import ServerSecret
from app.sqlite import InlineSqliteClient, InlineTransaction
from app.store import utcnow

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Path]:
    path = tmp_path / "baton.sqlite3"
    await open_database(f"sqlite://{path}")
    try:
        yield path
    finally:
        await close_database()


async def test_baton_uses_its_sqlite_client(database: Path) -> None:
    assert isinstance(ServerSecret._meta.db, InlineSqliteClient)
    async with in_transaction() as connection:
        assert isinstance(connection, InlineTransaction)


async def test_a_transaction_commits_or_rolls_back_as_a_whole(database: Path) -> None:
    async with in_transaction():
        await ServerSecret.create(name="kept", value="v", created_at=utcnow())
    with pytest.raises(RuntimeError):
        async with in_transaction():
            await ServerSecret.create(name="undone", value="v", created_at=utcnow())
            assert await ServerSecret.filter(name="undone").exists()
            raise RuntimeError("roll back")
    assert await ServerSecret.filter(name="kept").exists()
    assert not await ServerSecret.filter(name="undone").exists()


async def test_errors_inside_a_transaction_are_tortoises(database: Path) -> None:
    await ServerSecret.create(name="once", value="v", created_at=utcnow())
    with pytest.raises(IntegrityError):
        async with in_transaction():
            await ServerSecret.create(name="once", value="again", created_at=utcnow())


async def test_execute_many_answers_the_rows_it_changed(database: Path) -> None:
    for name in ("a", "b", "c"):
        await ServerSecret.create(name=name, value="old", created_at=utcnow())
    async with in_transaction() as connection:
        changed = await connection.execute_many(
            'UPDATE "server_secrets" SET "value" = ? WHERE "name" = ?',
            [["new", "a"], ["new", "b"], ["new", "nobody"]],
        )
    assert changed == 2
    assert await ServerSecret.filter(value="new").count() == 2


async def test_a_transaction_waits_for_another_process_lock_without_blocking_the_loop(
    database: Path,
) -> None:
    """Another process (the keys command) holds the write lock for a while: a transaction
    that reads and then writes waits for it rather than failing with "database is
    locked", and the event loop keeps running meanwhile."""
    other = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute(
        "INSERT INTO server_secrets (name, value, created_at) VALUES ('other', 'v', '2026-01-01')"
    )
    released = threading.Event()

    def release_later() -> None:
        time.sleep(0.5)
        other.execute("COMMIT")
        released.set()

    threading.Thread(target=release_later, daemon=True).start()
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while not released.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(tick())
    async with in_transaction():
        # Read, then write: with a deferred BEGIN this would fail at the write.
        assert not await ServerSecret.filter(name="mine").exists()
        await ServerSecret.create(name="mine", value="v", created_at=utcnow())
    assert released.is_set()
    await ticker
    other.close()
    assert ticks >= 10  # the loop ran while the transaction waited for the lock
    assert {s.name for s in await ServerSecret.all()} >= {"other", "mine"}
    # Trying the lock without waiting left the configured busy timeout in place.
    _, rows = await ServerSecret._meta.db.execute_query("PRAGMA busy_timeout")
    assert rows[0][0] == 5000


async def test_an_error_that_ended_the_transaction_is_the_one_raised(database: Path) -> None:
    """SQLite ends a transaction itself on some errors; leaving the block must raise the
    caller's error, not a failed ROLLBACK."""
    with pytest.raises(RuntimeError, match="the caller's error"):
        async with in_transaction() as connection:
            await connection.execute_query("ROLLBACK")  # as SQLite would on its own
            raise RuntimeError("the caller's error")
