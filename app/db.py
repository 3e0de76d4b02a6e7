"""Database set-up: the Tortoise configuration, start-up migrations, connection lifetime."""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path
from typing import Any

import asyncpg
from tortoise import Tortoise
from tortoise.backends.base.config_generator import expand_db_url
from tortoise.exceptions import BaseORMException
from tortoise.migrations.api import migrate

from app.errors import ConfigurationError
from app.files import PRIVATE_FILE, private_directory, private_sqlite_file
from app.logs import redact_url, redactor

log = logging.getLogger("baton.db")

#: SQLite tuned for one writing process: WAL (set by Tortoise), fsync at checkpoints only
#: (WAL + synchronous=NORMAL stays consistent across crashes of the process), and a
#: busy timeout so a short lock by a reader never fails a write.
SQLITE_PRAGMAS = {"synchronous": "NORMAL", "busy_timeout": "5000"}


def tortoise_config(database_url: str) -> dict[str, Any]:
    """The Tortoise config dict for ``database_url`` (``sqlite://…`` or ``postgres://…``)."""
    url = database_url
    if url.startswith("sqlite://") and url != "sqlite://:memory:":
        # Created 0600 (in a 0700 folder) before SQLite opens it: it holds secrets.
        private_sqlite_file(Path(url.removeprefix("sqlite://").split("?", 1)[0]))
        sep = "&" if "?" in url else "?"
        extra = "&".join(f"{k}={v}" for k, v in SQLITE_PRAGMAS.items() if f"{k}=" not in url)
        if extra:
            url = f"{url}{sep}{extra}"
    elif not url.startswith(("postgres://", "postgresql://", "asyncpg://", "sqlite://")):
        raise ConfigurationError(
            "BATON_DATABASE_URL must be sqlite://PATH or postgres://USER:PASS@HOST:PORT/DB"
        )
    if url.startswith("postgresql://"):
        url = "postgres://" + url.removeprefix("postgresql://")
    # Tortoise caches compiled SQL per connection *name*: a name per dialect keeps a
    # process that opens SQLite and then PostgreSQL (the test suite) from mixing them.
    name = "sqlite" if url.startswith("sqlite") else "postgres"
    connection: str | dict[str, Any] = url
    if name == "sqlite":
        # Tortoise's SQLite client, with transactions run without a thread hand-over
        # per statement (app/sqlite.py).
        connection = expand_db_url(url)
        connection["engine"] = "app.sqlite"
    return {
        "connections": {name: connection},
        "apps": {
            "models": {
                "models": ["app.models"],
                "default_connection": name,
                "migrations": "app.migrations",
            }
        },
        "use_tz": True,
        "timezone": "UTC",
    }


class SqliteProcessLock:
    """Holds an exclusive lock beside a SQLite database for the life of this process.

    Tortoise on SQLite cannot run read-then-write transactions from two processes
    (they fail with "database is locked"), so a second server process on the same
    file — or ``uvicorn --workers 2`` — is refused at start-up rather than failing
    later under load.
    """

    def __init__(self, database_url: str) -> None:
        self.path = sqlite_path(database_url)
        self._fd: int | None = None

    def acquire(self) -> None:
        if self.path is None:
            return
        lock_path = self.path.with_name(self.path.name + ".lock")
        private_directory(lock_path.parent)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise ConfigurationError(
                f"another Baton process is already serving the SQLite database {self.path}. "
                "SQLite supports one server process: run a single uvicorn process without "
                "--workers, or use PostgreSQL (BATON_DATABASE_URL=postgres://USER:PASS@HOST/DB) "
                "to run several."
            ) from exc
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def sqlite_path(database_url: str) -> Path | None:
    """The file behind a ``sqlite://`` URL, or None (PostgreSQL, in-memory)."""
    if not database_url.startswith("sqlite://"):
        return None
    raw = database_url.removeprefix("sqlite://").split("?", 1)[0]
    if not raw or raw == ":memory:":
        return None
    return Path(raw).resolve()


async def open_database(database_url: str) -> None:
    """Apply pending migrations, then open the connections Baton runs on.

    Raises:
        ConfigurationError: the database cannot be reached or migrated; the message
            names it with its password hidden.
    """
    config = tortoise_config(database_url)
    shown = redact_url(database_url)
    try:
        try:
            await migrate(config=config)
        finally:
            await Tortoise.close_connections()
        # The global fallback makes the connections visible to request tasks, which do
        # not inherit the lifespan task's context (Tortoise's Starlette integration does
        # this).
        await Tortoise.init(config=config, _enable_global_fallback=True)
    except (OSError, ValueError, BaseORMException, asyncpg.PostgresError) as exc:
        reason = redactor.redact(str(exc) or type(exc).__name__)
        raise ConfigurationError(f"BATON_DATABASE_URL: cannot open {shown}: {reason}") from exc
    log.info("database ready (%s)", shown)


async def close_database() -> None:
    await Tortoise.close_connections()
    # Forget the models' bindings too, so the next open (tests switch between SQLite and
    # PostgreSQL in one process) builds queries for its own dialect.
    await Tortoise._reset_apps()
