"""Tortoise's SQLite client, with transactions run on the event loop's thread.

Tortoise talks to SQLite through aiosqlite, which runs every statement on a
worker thread: each one is a hand-over to that thread and back, about 80 µs
on a 2-core machine, while the statements Baton runs take a few microseconds
each. A settle of one answer is a dozen statements, so most of its time went
to hand-overs.

Here a transaction takes SQLite's write lock when it begins (``BEGIN
IMMEDIATE``) and runs everything, COMMIT included, directly on the event
loop's thread: holding the write lock of a WAL database, a statement never
waits for anyone (a COMMIT appends to the log; now and then it also copies
the log back into the database, a few milliseconds). Only taking the lock
can wait, when another process (the ``keys`` command) holds it: BEGIN first
tries without waiting, and if the lock is taken, waits for it on the worker
thread (up to ``busy_timeout``), so the event loop never blocks on another
process. Statements outside a transaction (the API's reads) still run on
the worker thread.

Taking the write lock at BEGIN also means a transaction that reads and then
writes can no longer fail with "database is locked" when another process
wrote in between: it waits for the lock first (``busy_timeout``).

Tortoise serializes everything on the one connection (a transaction holds the
connection's lock until it ends), so the connection is never used by both
threads at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from typing import Any, cast

import aiosqlite
from tortoise.backends.base.client import (
    NestedTransactionContext,
    TransactionalDBClient,
    TransactionContext,
)
from tortoise.backends.sqlite.client import (
    SqliteClient,
    SqliteTransactionContext,
    SqliteTransactionWrapper,
    translate_exceptions,
)
from tortoise.connection import get_connections
from tortoise.exceptions import OperationalError, TransactionManagementError

#: Tortoise quotes NUL characters in query text this way (as its own client does).
_NUL = "'||CHAR(0)||'"


class InlineSqliteClient(SqliteClient):
    """The connection Baton uses for ``sqlite://`` URLs (see the module docstring)."""

    async def create_connection(self, with_db: bool) -> None:
        if not self._connection:
            # The statements of a transaction run on the event loop's thread, the
            # others on aiosqlite's: the connection must accept both.
            self._connection = await aiosqlite.connect(
                self.filename, isolation_level=None, check_same_thread=False
            )
            self._connection._conn.row_factory = sqlite3.Row
            for pragma, value in self.pragmas.items():
                cursor = await self._connection.execute(f"PRAGMA {pragma}={value}")
                await cursor.close()
            await self._post_connect()

    def _in_transaction(self) -> TransactionContext:
        return InlineTransactionContext(InlineTransaction(self), self._lock)


class InlineTransactionContext(SqliteTransactionContext):
    """Tortoise's SQLite transaction context, which gives back the connection's lock
    when the transaction cannot begin.

    Tortoise's takes the lock, then begins; when BEGIN fails (another process held
    the write lock past ``busy_timeout``) or is cancelled, ``__aexit__`` never runs,
    the lock is never released, and every later query waits for ever.
    """

    async def __aenter__(self) -> TransactionalDBClient:
        await self._trxlock.acquire()
        try:
            await self.ensure_connection()
            self.token = get_connections().set(self.connection_name, self.connection)
        except BaseException:
            self._trxlock.release()
            raise
        try:
            await self.connection.begin()
        except BaseException:
            get_connections().reset(self.token)
            self._trxlock.release()
            raise
        return self.connection


class InlineTransaction(SqliteTransactionWrapper):
    """A transaction holding the write lock, its statements run without a hand-over."""

    def __init__(self, connection: SqliteClient) -> None:
        super().__init__(connection)
        self.pragmas = connection.pragmas

    def _in_transaction(self) -> TransactionContext:
        return NestedTransactionContext(InlineTransaction(self))

    def _sqlite(self) -> sqlite3.Connection:
        return cast(sqlite3.Connection, self._connection._conn)

    async def begin(self) -> None:
        connection = self._sqlite()
        busy_timeout = self.pragmas.get("busy_timeout", 0)
        try:
            # Usually nobody holds the lock: take it here, without waiting.
            connection.execute("PRAGMA busy_timeout = 0")
            try:
                connection.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError:
                pass  # another process writes: wait for it on the worker thread
            finally:
                connection.execute(f"PRAGMA busy_timeout = {int(busy_timeout)}")
            await self._begin_on_worker_thread()
        except sqlite3.OperationalError as exc:
            raise TransactionManagementError(exc) from exc

    async def _begin_on_worker_thread(self) -> None:
        """BEGIN IMMEDIATE on aiosqlite's thread, which may wait up to ``busy_timeout``.

        A cancellation cannot stop the thread: BEGIN may still succeed after the
        caller is gone, leaving the connection inside a transaction nobody ends
        (holding the database's write lock). So the statement is shielded, waited
        for, and rolled back before the cancellation goes on.
        """
        begin = asyncio.ensure_future(self._connection.execute("BEGIN IMMEDIATE"))
        try:
            await asyncio.shield(begin)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await begin
            if self._sqlite().in_transaction:
                self._sqlite().execute("ROLLBACK")
            raise

    async def commit(self) -> None:
        if self._finalized:
            raise TransactionManagementError("Transaction already finalised")
        self._run_final("COMMIT")

    async def rollback(self) -> None:
        if self._finalized:
            raise TransactionManagementError("Transaction already finalised")
        if not self._sqlite().in_transaction:
            # SQLite already rolled back (some errors end the transaction themselves):
            # a ROLLBACK now would fail and hide the error that got us here.
            self._finalized = True
            return
        self._run_final("ROLLBACK")

    def _run_final(self, statement: str) -> None:
        # Holding the write lock, COMMIT does not wait either (with WAL it appends to the
        # log; a checkpoint now and then copies it back, a few milliseconds).
        try:
            self._sqlite().execute(statement)
        except sqlite3.OperationalError as exc:
            raise OperationalError(exc) from exc
        finally:
            self._finalized = True

    @translate_exceptions
    async def execute_insert(self, query: str, values: list[Any]) -> int:
        self.log.debug("%s: %s", query, values)
        return cast(int, self._sqlite().execute(query, values).lastrowid)

    @translate_exceptions
    async def execute_many(self, query: str, values: list[list[Any]]) -> int:
        """Run ``query`` for every row of ``values``; answers how many rows it changed."""
        self.log.debug("%s: %s", query, values)
        return self._sqlite().executemany(query, values).rowcount

    @translate_exceptions
    async def execute_query(
        self, query: str, values: list[Any] | None = None
    ) -> tuple[int, list[sqlite3.Row]]:
        query = query.replace("\x00", _NUL)
        self.log.debug("%s: %s", query, values)
        connection = self._sqlite()
        before = connection.total_changes
        rows = connection.execute(query, values or ()).fetchall()
        return (connection.total_changes - before) or len(rows), rows

    @translate_exceptions
    async def execute_query_dict(
        self, query: str, values: list[Any] | None = None
    ) -> list[dict[str, Any]]:
        query = query.replace("\x00", _NUL)
        self.log.debug("%s: %s", query, values)
        return [dict(row) for row in self._sqlite().execute(query, values or ()).fetchall()]


client_class = InlineSqliteClient
