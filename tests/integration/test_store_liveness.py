"""Liveness rows and taking back the leases of dead processes (app/store/liveness.py)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from tortoise import connections

from app.db import close_database, open_database
from app.store import Store
from tests.integration.storekit import create


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[str]:
    await open_database(database_url)
    try:
        yield "sqlite" if database_url.startswith("sqlite") else "postgres"
    finally:
        await close_database()


async def test_a_process_announces_itself_and_retires(database: str) -> None:
    store = Store(owner="baton-one")
    await store.announce()
    await store.announce()  # renewing is idempotent
    [(owner, started, seen)] = await store.servers()
    assert owner == "baton-one" and seen >= started
    await store.retire()
    assert await store.servers() == []


@pytest.fixture
async def postgres(pg_url: str) -> AsyncIterator[None]:
    await open_database(pg_url)
    try:
        yield
    finally:
        await close_database()


@pytest.fixture
async def sqlite(sqlite_url: str) -> AsyncIterator[None]:
    await open_database(sqlite_url)
    try:
        yield
    finally:
        await close_database()


async def test_on_postgres_a_process_that_stopped_renewing_loses_its_leases(
    postgres: None,
) -> None:
    alive, dead = Store(owner="baton-alive"), Store(owner="baton-dead")
    await alive.announce()
    await dead.announce()
    await create(dead, {"id": "w", "steps": [{"id": "a", "url": "http://h/a"}]})
    [request] = await dead.claim_due(10, lease_seconds=30)
    # Renewed a moment ago: alive, its lease stands.
    assert await alive.take_back_from_the_dead() == 0
    assert await alive.claim_due(10, lease_seconds=30) == []
    # Its row goes stale (it was killed): its lease is taken back, its row forgotten.
    connection = connections.get("postgres")
    await connection.execute_query(
        "UPDATE servers SET seen_at = now() - interval '1 minute' WHERE owner = 'baton-dead'"
    )
    assert await alive.take_back_from_the_dead() == 1
    assert [owner for owner, _, _ in await alive.servers()] == ["baton-alive"]
    [again] = await alive.claim_due(10, lease_seconds=30)
    assert again.takeover and again.message_id == request.message_id
    assert again.attempt == request.attempt


async def test_on_sqlite_a_starting_process_takes_over_every_lease_left(sqlite: None) -> None:
    before = Store(owner="baton-before")
    await before.announce()
    await create(before, {"id": "w", "steps": [{"id": "a", "url": "http://h/a"}]})
    [request] = await before.claim_due(10, lease_seconds=3600)
    after = Store(owner="baton-after")
    await after.announce()
    assert await after.take_over_predecessors() == 1
    assert [owner for owner, _, _ in await after.servers()] == ["baton-after"]
    [again] = await after.claim_due(10, lease_seconds=30, now=time.time())
    assert again.takeover and again.message_id == request.message_id
