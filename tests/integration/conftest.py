"""Fixtures of the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from app.db import close_database, open_database
from app.store import Store


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    """A store on a fresh database, once on SQLite and once on PostgreSQL."""
    await open_database(database_url)
    store = Store()
    try:
        yield store
    finally:
        await store.conditions.aclose()
        await close_database()
