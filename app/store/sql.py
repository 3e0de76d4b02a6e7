"""The SQL toolkit: hand-written statements that behave the same on SQLite and PostgreSQL.

Hot paths bypass Tortoise's query objects and model instances: they build their
SQL here and read rows as plain records. What each function promises holds on
both databases — the placeholders, the row counts of conditional writes (zero
rows means someone else won), ``RETURNING`` — so the code above never asks
which database it runs on:

- ``Where``: a WHERE clause and its parameters in the connection's dialect;
- ``fetch``: rows as plain records with only the named fields, converted as
  Tortoise would;
- ``insert_many`` / ``insert_returning``: bulk inserts, the latter answering
  columns of every row;
- ``update_many``: conditional updates of many rows, each with its own values
  and guard, one statement per row shape; rows whose guard no longer holds are
  reported (``TransitionRejected`` on SQLite, which cannot say which);
- ``retry_transaction``: run a transaction again when it lost a race.

Errors are the drivers' own, except ``TransitionRejected``; ``UNAVAILABLE``
lists what a driver raises when the database cannot answer.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from enum import Enum
from types import SimpleNamespace
from typing import Any, TypeVar, cast

import asyncpg
from tortoise import fields
from tortoise.exceptions import DBConnectionError, OperationalError, TransactionManagementError
from tortoise.models import Model

from app.errors import TransitionRejected
from app.models import Workflow
from app.notify import CHANNEL as NOTIFY_CHANNEL

log = logging.getLogger("baton.store")

T = TypeVar("T")

#: What the driver raises when the database cannot be reached or answer.
UNAVAILABLE = (
    OperationalError,
    DBConnectionError,
    TransactionManagementError,
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)


def database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database could not serve us right now (it is down,
    unreachable, or another process held SQLite's write lock past the busy timeout),
    as opposed to a statement it refused: worth a 503 and a retry, not a 500."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(
            seen,
            (
                DBConnectionError,
                TransactionManagementError,
                ConnectionError,
                asyncpg.PostgresConnectionError,
                asyncpg.InterfaceError,
                asyncpg.CannotConnectNowError,
            ),
        ):
            return True
        if isinstance(seen, (OperationalError, sqlite3.OperationalError)) and any(
            word in str(seen).lower() for word in ("locked", "busy", "unable to open")
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def supports_for_update() -> bool:
    """Whether the database locks rows (``SELECT … FOR UPDATE``): PostgreSQL, not SQLite."""
    return bool(Workflow._meta.db.capabilities.support_for_update)


async def notify_due() -> None:
    """Tell other processes new work is due (PostgreSQL; sent when the transaction commits)."""
    if supports_for_update():
        await Workflow._meta.db.execute_query(f"SELECT pg_notify('{NOTIFY_CHANNEL}', '')")


class Where:
    """A WHERE clause and its parameters, with the placeholders of the connection's dialect."""

    def __init__(self, model: type[Model]) -> None:
        self.model = model
        self.postgres = model._meta.db.schema_generator.DIALECT == "postgres"
        self.params: list[Any] = []
        self.parts: list[str] = []

    def param(self, value: Any) -> str:
        self.params.append(value.value if isinstance(value, Enum) else value)
        return f"${len(self.params)}" if self.postgres else "?"

    def eq(self, name: str, value: Any) -> Where:
        self.parts.append(f"{column(self.model, name)} = {self.param(value)}")
        return self

    def lt(self, name: str, value: Any) -> Where:
        self.parts.append(f"{column(self.model, name)} < {self.param(value)}")
        return self

    def gt(self, name: str, value: Any) -> Where:
        self.parts.append(f"{column(self.model, name)} > {self.param(value)}")
        return self

    def raw(self, condition: str) -> Where:
        """A condition written in SQL (no parameters), for what the others cannot say."""
        self.parts.append(condition)
        return self

    def isin(self, name: str, values: Iterable[Any]) -> Where:
        marks = ", ".join(self.param(v) for v in values)
        self.parts.append(f"{column(self.model, name)} IN ({marks})")
        return self

    def groups(self, outer: str, inner: str, groups: Mapping[str, Iterable[Any] | None]) -> Where:
        """Rows whose ``outer`` is a key of ``groups`` and whose ``inner`` is one of its
        values (any ``inner`` when the values are None)."""
        terms = []
        for key, values in groups.items():
            term = f"{column(self.model, outer)} = {self.param(key)}"
            if values is not None:
                marks = ", ".join(self.param(v) for v in values)
                term = f"({term} AND {column(self.model, inner)} IN ({marks}))"
            terms.append(term)
        self.parts.append("(" + " OR ".join(terms) + ")")
        return self

    @property
    def sql(self) -> str:
        return " AND ".join(self.parts)


async def fetch(
    model: type[Model],
    columns: tuple[str, ...],
    where: Where,
    suffix: str = "",
    *,
    raw: tuple[str, ...] = (),
) -> list[SimpleNamespace]:
    """Rows as plain records with only the named fields, converted as Tortoise would
    (JSON, booleans, times), without building model instances or query objects.

    Columns named in ``raw`` are left as the driver gives them (JSON as its text)."""
    select, names = projection(model, columns, raw)
    found = []
    for row in await model._meta.db.execute_query_dict(
        f"{select} WHERE {where.sql}{suffix}", where.params
    ):
        found.append(
            SimpleNamespace(
                **{
                    name: (
                        convert(row[source]) if convert and row[source] is not None else row[source]
                    )
                    for name, source, convert in names
                }
            )
        )
    return found


@functools.cache
def projection(
    model: type[Model], columns: tuple[str, ...], raw: tuple[str, ...] = ()
) -> tuple[str, list[tuple[str, str, Callable[[Any], Any] | None]]]:
    """The SELECT … FROM of ``columns`` and how to read each (computed once)."""
    fields_map = model._meta.fields_map
    names = [
        (c, (fields_map[c].source_field or c), None if c in raw else _converter(fields_map[c]))
        for c in columns
    ]
    select = f'SELECT {", ".join(column(model, c) for c in columns)} FROM "{model._meta.db_table}"'
    return select, names


def _converter(f: Any) -> Callable[[Any], Any] | None:
    if isinstance(f, (fields.JSONField, fields.DatetimeField)):
        return cast(Callable[[Any], Any], f.to_python_value)
    if isinstance(f, fields.BooleanField):
        return bool
    return None


async def insert_many(model: type[Model], rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert rows given as {field: value} (the same fields in each) in one batch,
    without building a model instance per row."""
    if not rows:
        return
    db = model._meta.db
    names = list(rows[0])
    if db.schema_generator.DIALECT == "postgres":
        marks = ", ".join(f"${i + 1}" for i in range(len(names)))
    else:
        marks = ", ".join("?" for _ in names)
    columns = ", ".join(column(model, n) for n in names)
    sql = f'INSERT INTO "{model._meta.db_table}" ({columns}) VALUES ({marks})'
    await db.execute_many(sql, [[db_value(model, n, row[n]) for n in names] for row in rows])


#: Rows per multi-row INSERT … RETURNING (keeps parameters under every limit).
INSERT_CHUNK = 500


async def insert_returning(
    model: type[Model], rows: Sequence[Mapping[str, Any]], returning: Sequence[str]
) -> list[dict[str, Any]]:
    """Insert rows (the same fields in each) with multi-row INSERTs that answer the
    ``returning`` columns of every row."""
    db = model._meta.db
    found: list[dict[str, Any]] = []
    if not rows:
        return found
    names = list(rows[0])
    columns = ", ".join(column(model, n) for n in names)
    answer = ", ".join(column(model, n) for n in returning)
    for start in range(0, len(rows), INSERT_CHUNK):
        where = Where(model)  # only its placeholders
        values = ", ".join(
            "(" + ", ".join(where.param(db_value(model, n, row[n])) for n in names) + ")"
            for row in rows[start : start + INSERT_CHUNK]
        )
        sql = f'INSERT INTO "{model._meta.db_table}" ({columns}) VALUES {values} RETURNING {answer}'
        found.extend(await db.execute_query_dict(sql, where.params))
    return found


UpdateRow = tuple[Mapping[str, Any], Mapping[str, Any], Mapping[str, Any]]
DeleteRow = tuple[Mapping[str, Any], Mapping[str, Any]]


async def update_many(
    model: type[Model], rows: Sequence[UpdateRow], *, partial: bool = False
) -> list[tuple[Any, ...]]:
    """Update many rows, each with its own values, in one statement per shape.

    Each row is (key columns, guard columns, fields to set): it is updated only if its
    guard columns still hold the given values (NULL matching NULL), and only the
    fields it names are set. Rows of the same shape (same columns) go in one
    statement: a prepared statement run for every row on SQLite, one UPDATE over
    arrays on PostgreSQL.

    A row that does not match means someone else changed it since it was read:
    ``TransitionRejected`` is raised (the transaction runs again). With ``partial``,
    PostgreSQL answers the keys of the rows that matched instead; SQLite, which cannot
    say which rows of a batch matched, raises either way (a SQLite transaction holds
    the write lock from its BEGIN, so nothing changes under it).
    """
    db = model._meta.db
    postgres = db.schema_generator.DIALECT == "postgres"
    matched: list[tuple[Any, ...]] = []
    for (keys, guards, names), group in _shapes(rows).items():
        if postgres:
            sql, params = _pg_update(model, keys, guards, names, group)
            found = await db.execute_query_dict(sql, params)
            if len(found) != len(group) and not partial:
                raise _moved(model, len(group) - len(found), len(group))
            matched.extend(tuple(f[c] for c in keys) for f in found)
            continue
        sql, values = _sqlite_update(model, keys, guards, names, group)
        # In a transaction, the SQLite client (app/sqlite.py) answers the rows changed.
        count = cast(int, await cast(Any, db).execute_many(sql, values))
        if count != len(group):
            raise _moved(model, len(group) - count, len(group))
        matched.extend(tuple(key[c] for c in keys) for key, _, _ in group)
    return matched


async def delete_many(model: type[Model], rows: Sequence[DeleteRow]) -> None:
    """Delete rows given as (key columns, guard columns), each only if its guard
    columns still hold the given values (NULL matching NULL); one statement per shape.

    A row that is not deleted was changed or deleted by someone else since it was
    read: ``TransitionRejected``, on both databases.
    """
    db = model._meta.db
    postgres = db.schema_generator.DIALECT == "postgres"
    shapes: dict[tuple[tuple[str, ...], tuple[str, ...]], list[DeleteRow]] = {}
    for key, guard in rows:
        shapes.setdefault((tuple(key), tuple(guard)), []).append((key, guard))
    table = f'"{model._meta.db_table}"'
    for (keys, guards), group in shapes.items():
        if postgres:
            columns = (*keys, *guards)
            params = [
                [db_value(model, c, {**key, **guard}[c]) for key, guard in group] for c in columns
            ]
            aliases = [f"c{i}" for i in range(len(columns))]
            where = " AND ".join(
                f"t.{column(model, c)} {'=' if c in keys else 'IS NOT DISTINCT FROM'} v.{a}"
                for c, a in zip(columns, aliases, strict=True)
            )
            sql = (
                f"DELETE FROM {table} AS t USING unnest({_pg_arrays(model, columns)}) "
                f"AS v({', '.join(aliases)}) WHERE {where} RETURNING 1"
            )
            count = len(await db.execute_query_dict(sql, params))
        else:
            where = " AND ".join(
                [f"{column(model, c)} = ?" for c in keys]
                + [f"{column(model, c)} IS ?" for c in guards]
            )
            values = [
                [db_value(model, c, key[c]) for c in keys]
                + [db_value(model, c, guard[c]) for c in guards]
                for key, guard in group
            ]
            count = cast(
                int, await cast(Any, db).execute_many(f"DELETE FROM {table} WHERE {where}", values)
            )
        if count != len(group):
            raise _moved(model, len(group) - count, len(group))


def _shapes(
    rows: Sequence[UpdateRow],
) -> dict[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]], list[UpdateRow]]:
    shapes: dict[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]], list[UpdateRow]] = {}
    for row in rows:
        key, guard, changes = row
        shapes.setdefault((tuple(key), tuple(guard), tuple(sorted(changes))), []).append(row)
    return shapes


def _moved(model: type[Model], missed: int, total: int) -> TransitionRejected:
    return TransitionRejected(f"{missed} of {total} {model._meta.db_table} rows changed under us")


def _pg_arrays(model: type[Model], columns: Sequence[str]) -> str:
    """``$1::type[], $2::type[], …``: one typed array parameter per column."""
    fields_map = model._meta.fields_map
    return ", ".join(
        f"${i + 1}::{fields_map[name].get_for_dialect('postgres', 'SQL_TYPE')}[]"
        for i, name in enumerate(columns)
    )


def db_value(model: type[Model], name: str, value: Any) -> Any:
    """``value`` as the driver takes it for the field ``name`` of ``model``.

    Values reach the store validated (pydantic at the API, the machine's own values),
    so only JSON fields go through Tortoise's conversion (it encodes them); the
    others are passed as they are, enums as their values.
    """
    if isinstance(value, Enum):
        return value.value
    if name in _json_fields(model):
        return model._meta.fields_map[name].to_db_value(value, model)
    return value


@functools.cache
def _json_fields(model: type[Model]) -> frozenset[str]:
    return frozenset(
        name for name, f in model._meta.fields_map.items() if isinstance(f, fields.JSONField)
    )


@functools.cache
def column(model: type[Model], name: str) -> str:
    return '"' + (model._meta.fields_map[name].source_field or name) + '"'


def _sqlite_update(
    model: type[Model],
    keys: tuple[str, ...],
    guards: tuple[str, ...],
    names: tuple[str, ...],
    rows: Sequence[UpdateRow],
) -> tuple[str, list[list[Any]]]:
    sets = ", ".join(f"{column(model, n)} = ?" for n in names)
    where = " AND ".join(
        [f"{column(model, c)} = ?" for c in keys] + [f"{column(model, c)} IS ?" for c in guards]
    )
    sql = f'UPDATE "{model._meta.db_table}" SET {sets} WHERE {where}'
    values = [
        [db_value(model, n, changes[n]) for n in names]
        + [db_value(model, c, key[c]) for c in keys]
        + [db_value(model, c, guard[c]) for c in guards]
        for key, guard, changes in rows
    ]
    return sql, values


def _pg_update(
    model: type[Model],
    keys: tuple[str, ...],
    guards: tuple[str, ...],
    names: tuple[str, ...],
    rows: Sequence[UpdateRow],
) -> tuple[str, list[Any]]:
    """UPDATE … FROM unnest(arrays): one statement and one parameter per column."""
    columns = [("k", c) for c in keys] + [("g", c) for c in guards] + [("s", n) for n in names]
    params: list[Any] = []
    for part, name in columns:
        if part == "k":
            params.append([db_value(model, name, key[name]) for key, _, _ in rows])
        elif part == "g":
            params.append([db_value(model, name, guard[name]) for _, guard, _ in rows])
        else:
            params.append([db_value(model, name, changes[name]) for _, _, changes in rows])
    arrays = _pg_arrays(model, [name for _, name in columns])
    aliases = [f"c{i}" for i in range(len(columns))]
    sets = ", ".join(
        f"{column(model, name)} = v.{alias}"
        for (part, name), alias in zip(columns, aliases, strict=True)
        if part == "s"
    )
    where = " AND ".join(
        f"t.{column(model, name)} {'=' if part == 'k' else 'IS NOT DISTINCT FROM'} v.{alias}"
        for (part, name), alias in zip(columns, aliases, strict=True)
        if part != "s"
    )
    returning = ", ".join(f"t.{column(model, c)}" for c in keys)
    sql = (
        f'UPDATE "{model._meta.db_table}" AS t SET {sets} '
        f"FROM unnest({arrays}) AS v({', '.join(aliases)}) "
        f"WHERE {where} RETURNING {returning}"
    )
    return sql, params


#: Errors PostgreSQL raises when concurrent transactions collide; the transaction is
#: rolled back and can simply run again. Tortoise passes asyncpg's errors through.
_RETRYABLE = (
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.LockNotAvailableError,
    TransitionRejected,
)
TRANSACTION_ATTEMPTS = 4


def _retryable(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, _RETRYABLE):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


async def retry_transaction(operation: Callable[[], Awaitable[T]]) -> T:
    """Run ``operation`` (one transaction) again when it lost a race, a few times."""
    for attempt in range(1, TRANSACTION_ATTEMPTS + 1):
        try:
            return await operation()
        except Exception as exc:
            if attempt == TRANSACTION_ATTEMPTS or not _retryable(exc):
                raise
            log.info("transaction lost a race (%s); running it again", type(exc).__name__)
            await asyncio.sleep(0.005 * attempt)
    raise AssertionError("unreachable")
