"""Database set-up: URLs, and the one-process rule for SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.db import SqliteProcessLock, sqlite_path, tortoise_config
from app.errors import ConfigurationError


def test_second_holder_of_a_sqlite_database_is_refused(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/baton.sqlite3"
    first = SqliteProcessLock(url)
    first.acquire()
    try:
        # flock locks belong to an open file: a second open is refused like another process.
        with pytest.raises(ConfigurationError, match="PostgreSQL"):
            SqliteProcessLock(url).acquire()
        other = SqliteProcessLock(f"sqlite://{tmp_path}/other.sqlite3")
        other.acquire()
        other.release()
    finally:
        first.release()
    again = SqliteProcessLock(url)
    again.acquire()
    again.release()


def test_postgres_needs_no_process_lock() -> None:
    lock = SqliteProcessLock("postgres://postgres@127.0.0.1:5432/baton")
    lock.acquire()
    lock.release()
    assert lock.path is None


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite://data/baton.sqlite3", Path("data/baton.sqlite3").resolve()),
        ("sqlite:///tmp/x.db?synchronous=OFF", Path("/tmp/x.db")),
        ("sqlite://:memory:", None),
        ("postgres://u@h/db", None),
    ],
)
def test_sqlite_path(url: str, expected: Path | None) -> None:
    assert sqlite_path(url) == expected


def test_tortoise_config_tunes_sqlite_and_names_connections_by_dialect(tmp_path: Path) -> None:
    config = tortoise_config(f"sqlite://{tmp_path}/db.sqlite3")
    assert list(config["connections"]) == ["sqlite"]
    sqlite = config["connections"]["sqlite"]
    # Baton's SQLite client (transactions without a thread hand-over per statement).
    assert sqlite["engine"] == "app.sqlite"
    assert sqlite["credentials"]["file_path"] == f"{tmp_path}/db.sqlite3"
    assert sqlite["credentials"]["synchronous"] == "NORMAL"
    assert sqlite["credentials"]["busy_timeout"] == "5000"
    assert sqlite["credentials"]["journal_mode"] == "WAL"
    pg = tortoise_config("postgresql://u:p@h:5432/db")
    assert pg["connections"] == {"postgres": "postgres://u:p@h:5432/db"}
    with pytest.raises(ConfigurationError):
        tortoise_config("mysql://u@h/db")
