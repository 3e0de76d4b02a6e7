"""The store alone under W1: no HTTP, no server, answers fabricated in the loop.

Creates N diamond workflows (start → a, b → merge) through the store, then claims
and settles with instant successful answers (requests made due are handed off as
the dispatcher does) until nothing is due, and prints steps/s, CPU per step and
the number of SQL statements per step by phase (those sent through Tortoise's
client: the batched updates' executemany on SQLite goes to the driver directly and
is not counted). It isolates the database work that W1 measures together with
HTTP:

    .venv/bin/python -m bench.storeloop [N] [DATABASE_URL]

The default database is a fresh SQLite file in a temporary directory.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from tortoise.backends.asyncpg import client as pg_client
from tortoise.backends.sqlite import client as sqlite_client

from app.db import close_database, open_database
from app.engine import classify_answer
from app.schemas import canonical_json, parse_create_request
from app.store import OutboundRequest, Report, Store

STATEMENTS: Counter[str] = Counter()
_phase = ["setup"]


def _count(cls: type, name: str) -> None:
    original: Callable[..., Awaitable[Any]] = getattr(cls, name)

    async def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        STATEMENTS[_phase[0]] += 1
        return await original(self, *args, **kwargs)

    setattr(cls, name, counted)


for _cls in (
    sqlite_client.SqliteClient,
    sqlite_client.SqliteTransactionWrapper,
    pg_client.AsyncpgDBClient,
    pg_client.TransactionWrapper,
):
    for _name in ("execute_query", "execute_insert", "execute_many", "execute_query_dict"):
        if _name in _cls.__dict__:
            _count(_cls, _name)


def diamond(i: int) -> bytes:
    url = "http://127.0.0.1:9/step"
    steps = [
        {"id": "start", "url": url},
        {"id": "a", "url": url, "dependsOn": ["start"]},
        {"id": "b", "url": url, "dependsOn": ["start"]},
        {"id": "merge", "url": url, "dependsOn": ["a", "b"]},
    ]
    return orjson.dumps({"name": "storeloop", "steps": steps, "context": {"i": i}})


async def main(count: int, database_url: str) -> None:
    await open_database(database_url)
    store = Store()
    answer = classify_answer(200, orjson.dumps({"success": True, "result": {"v": 1}}))
    wall, cpu = time.perf_counter(), time.process_time()
    _phase[0] = "create"
    for i in range(count):
        spec, document = parse_create_request(
            diamond(i), check_url=lambda url: None, check_condition=lambda source: None
        )
        digest = hashlib.sha256(canonical_json(document)).hexdigest()
        await store.create_workflow(spec, request_hash=digest)
    created_wall, created_cpu = time.perf_counter(), time.process_time()
    steps = 0
    handed: list[OutboundRequest] = []
    while True:
        _phase[0] = "claim"
        reqs = await store.claim_due(64, lease_seconds=30) + handed
        if not reqs:
            break
        steps += len(reqs)
        _phase[0] = "settle"
        now = datetime.now(UTC)
        summary = await store.settle(
            [Report(req, answer, now, 1.0) for req in reqs],
            rand=lambda: 0.0,
            handoff=64,
            lease_seconds=30,
        )
        handed = summary.requests
    done_wall, done_cpu = time.perf_counter(), time.process_time()
    await close_database()
    print(
        f"{count} workflows created in {created_wall - wall:.2f} s "
        f"({count / (created_wall - wall):.0f}/s, CPU {created_cpu - cpu:.2f} s)"
    )
    print(
        f"{steps} steps run in {done_wall - created_wall:.2f} s "
        f"({steps / (done_wall - created_wall):.0f} steps/s, "
        f"CPU {(done_cpu - created_cpu) / steps * 1000:.3f} ms per step)"
    )
    per_step = {phase: round(n / steps, 2) for phase, n in STATEMENTS.items() if phase != "setup"}
    print(f"SQL statements per step: {per_step}")


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    url = sys.argv[2] if len(sys.argv) > 2 else f"sqlite://{tempfile.mkdtemp()}/storeloop.sqlite3"
    asyncio.run(main(n, url))
