"""Another process holding SQLite's write lock must not freeze the server.

A ``sqlite3`` shell, ``VACUUM`` or a backup can hold the database's write lock for
longer than the busy timeout (5 s). While it does, transactions that cannot begin
fail; none may leave the connection's lock taken. ``/readyz`` answers within a few
seconds, and once the lock is gone the server works again without a restart —
including the answers that arrived while it was held.
"""

from __future__ import annotations

import sqlite3
import threading
import time

import httpx
import pytest
from contract import unique_id
from harness import BatonFactory, HandlerClient

pytestmark = pytest.mark.slow

#: Longer than twice the server's busy timeout (5 s): its transactions give up, and so
#: would a second try at recording an answer.
HOLD = 14.0


def hold_write_lock(path: str, seconds: float, held: threading.Event) -> None:
    connection = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        connection.execute("BEGIN EXCLUSIVE")
        held.set()
        time.sleep(seconds)
        connection.execute("COMMIT")
    finally:
        connection.close()


def test_a_lock_held_past_the_busy_timeout_does_not_freeze_the_server(
    baton_factory: BatonFactory, handler: HandlerClient
) -> None:
    server = baton_factory.create(database_url=None)
    assert server.database_url.startswith("sqlite://")
    path = server.database_url.removeprefix("sqlite://")
    handler.script({"slow": [{"delay": 2.0}]})
    with server.client(timeout=30) as api:
        before = unique_id("before")
        api.create({"id": before, "steps": [{"id": "slow", "url": handler.step_url("slow")}]})
        handler.wait_for(lambda records: len(records) == 1, name="slow")

        held = threading.Event()
        holder = threading.Thread(target=hold_write_lock, args=(path, HOLD, held))
        holder.start()
        try:
            assert held.wait(10)
            # The answer to "slow" arrives while the lock is held: it cannot be
            # recorded yet. Meanwhile readiness is answered, promptly.
            time.sleep(3.0)
            for _ in range(2):
                started = time.monotonic()
                ready = httpx.get(f"{server.url}/readyz", timeout=10)
                assert time.monotonic() - started < 4.0
                assert ready.status_code in (200, 503)
            healthy = httpx.get(f"{server.url}/healthz", timeout=2)
            assert healthy.status_code == 200
        finally:
            holder.join()

        # The lock is gone: the server recovers without a restart.
        deadline = time.monotonic() + 15
        while httpx.get(f"{server.url}/readyz", timeout=10).status_code != 200:
            assert time.monotonic() < deadline, server.log_tail()
            time.sleep(0.2)
        after = unique_id("after")
        api.create({"id": after, "steps": [{"id": "a", "url": handler.step_url("a")}]})
        api.wait_status(after, "completed", timeout=20)
        document = api.wait_status(before, "completed", timeout=30)
        assert document["steps"][0]["attempts"] == 1
    # The answer held during the lock was recorded: "slow" went out exactly once.
    assert len(handler.requests("slow")) == 1
    assert server.is_running()
