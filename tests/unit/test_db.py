"""Database set-up: URLs, the one-process rule for SQLite, and private files."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.db import SqliteProcessLock, sqlite_path, tortoise_config
from app.errors import ConfigurationError
from app.keys import api_keys, signing_secrets


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


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The usual umask (022), under which files are world-readable unless made private."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.usefixtures("open_umask")
def test_a_new_sqlite_database_and_its_folder_are_private(tmp_path: Path) -> None:
    path = tmp_path / "data" / "baton.sqlite3"
    tortoise_config(f"sqlite://{path}")
    assert _mode(path.parent) == 0o700
    assert _mode(path) == 0o600
    # SQLite gives the write-ahead log and shared memory the database's own mode.
    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("CREATE TABLE t (x)")
        connection.execute("INSERT INTO t VALUES (1)")
        connection.commit()
        companions = [path.with_name(path.name + suffix) for suffix in ("-wal", "-shm")]
        assert all(file.exists() for file in companions)
        assert [_mode(file) for file in companions] == [0o600, 0o600]
    finally:
        connection.close()


@pytest.mark.usefixtures("open_umask")
def test_an_existing_readable_database_is_made_private(tmp_path: Path) -> None:
    folder = tmp_path / "theirs"
    folder.mkdir(mode=0o755)
    path = folder / "baton.sqlite3"
    files = [path, folder / "baton.sqlite3-wal", folder / "baton.sqlite3-shm"]
    for file in files:
        file.write_bytes(b"")
        file.chmod(0o644)
    tortoise_config(f"sqlite://{path}")
    assert [_mode(file) for file in files] == [0o600] * 3
    # A folder that was already there is the user's: it is left as it was.
    assert _mode(folder) == 0o755


@pytest.mark.usefixtures("open_umask")
def test_the_process_lock_and_generated_keys_are_private(tmp_path: Path) -> None:
    data = tmp_path / "fresh"
    lock = SqliteProcessLock(f"sqlite://{data}/baton.sqlite3")
    lock.acquire()
    lock.release()
    assert _mode(data) == 0o700
    assert _mode(data / "baton.sqlite3.lock") == 0o600
    keys_dir = tmp_path / "keys"
    api_keys((), keys_dir)
    signing_secrets((), keys_dir)
    assert _mode(keys_dir) == 0o700
    assert [_mode(keys_dir / name) for name in ("api-key", "signing-secret")] == [0o600] * 2
