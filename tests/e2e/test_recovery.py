"""After kill -9, a restarted server takes its predecessor's work back at once.

With the default lease (30 s), the deliveries a killed process had in flight used to
wait a whole lease before anyone sent them again. A restarted process that knows its
predecessor is dead takes them back at once: on SQLite because only one server
process may serve the file, on PostgreSQL because the dead process stopped renewing
its liveness row. Here 200 workflows have their first step's requests in flight when
the server is killed; they must all finish well within one lease of the restart.
"""

from __future__ import annotations

import os
import time

import pytest
from contract import unique_id
from harness import POSTGRES_ENV, BatonFactory, HandlerClient
from helpers_durability import dag_body, script_delays, wait_stats

pytestmark = pytest.mark.slow

LOCAL_POSTGRES = "postgres://postgres@127.0.0.1:5432/postgres"
#: BATON_LEASE_SECONDS's default.
DEFAULT_LEASE = 30.0
WORKFLOWS = 200
CHAIN = {"a": [], "b": ["a"]}


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_work_in_flight_at_a_crash_resumes_without_waiting_for_its_leases(
    baton_factory: BatonFactory, handler: HandlerClient, database: str
) -> None:
    database_url = None
    if database == "postgres":
        database_url = baton_factory.postgres_url(os.environ.get(POSTGRES_ENV) or LOCAL_POSTGRES)
    # Step a answers after 2 s: when the server is killed, every one is on the wire.
    script_delays(handler, {"a": 2.0, "b": 0.0})
    server = baton_factory.create(database_url=database_url)
    ids = [unique_id(f"crash-{i}") for i in range(WORKFLOWS)]
    with server.client(timeout=30) as api:
        for workflow_id in ids:
            api.create(dag_body(handler, workflow_id, CHAIN))
        wait_stats(
            handler,
            lambda stats: stats["received"] >= WORKFLOWS,
            30,
            "every first step on the wire",
        )
        assert server.kill() == -9
        server.restart()
        restarted = time.monotonic()
        documents = api.wait_all(ids, "completed", DEFAULT_LEASE)
        recovered = time.monotonic() - restarted
    assert all(d["status"] == "completed" for d in documents.values())
    # Far less than a lease: the predecessor's requests were sent again at once (the
    # 2 s the handler takes to answer each, and on PostgreSQL the few seconds it takes
    # to see that the dead process stopped renewing its row).
    assert recovered < DEFAULT_LEASE / 2, f"recovery took {recovered:.1f} s"
    assert "took back" in server.log_path.read_text(), server.log_tail()
