"""Durability over real processes: kill -9 mid-flight, SIGTERM with requests in flight.

DESIGN §5: every transition is committed before it is acted on, so a server killed at any
instant and restarted on the same database loses no workflow; requests in flight at the
crash are sent again with the same ``webhook-id`` once their lease runs out. On SIGTERM a
server stops claiming, lets requests in flight finish for up to ``BATON_SHUTDOWN_GRACE``
seconds, records their outcomes, releases the leases of the rest and exits 0.
"""

from __future__ import annotations

import concurrent.futures
import time

import pytest
from contract import steps_by_id, unique_id
from harness import BatonFactory, HandlerClient
from helpers_durability import (
    DIAMOND,
    assert_clean_sigterm_exit,
    assert_completed,
    assert_dependencies_answered_first,
    assert_every_step_requested,
    assert_exactly_once,
    assert_signed,
    assert_webhook_ids_kept,
    create_despite_crashes,
    dag_body,
    group,
    lost,
    script_delays,
    wait_stats,
)

pytestmark = pytest.mark.slow

LEASE = 2.0
#: How long a whole batch of workflows may take to finish once the server is back.
FINISH = 90.0


def test_kill_9_three_times_mid_flight_loses_nothing(
    baton_factory: BatonFactory, handler: HandlerClient
) -> None:
    workflows = 200
    total = workflows * len(DIAMOND)
    script_delays(handler, dict.fromkeys(DIAMOND, 0.075))
    server = baton_factory.create(extra_env={"BATON_LEASE_SECONDS": str(LEASE)})
    ids = [unique_id(f"kill9-{i}") for i in range(workflows)]
    bodies = [dag_body(handler, wid) for wid in ids]

    kills: list[tuple[float, int, int]] = []
    with server.client(timeout=10) as api, concurrent.futures.ThreadPoolExecutor(1) as pool:
        # Created while the server is killed and restarted: a kill can land mid-create.
        creating = pool.submit(create_despite_crashes, api, bodies, FINISH)
        for quarter in (1, 2, 3):
            wait_stats(
                handler,
                lambda stats, q=quarter: stats["distinct"] >= total * q // 4,
                FINISH,
                f"{quarter}/4 of the steps requested",
            )
            assert server.kill() == -9
            killed_at = time.monotonic()
            stats = handler.stats(kind="steps")
            kills.append((killed_at, stats["distinct"], stats["inflight"]))
            server.restart()
        codes = creating.result()
        documents = api.wait_all(ids, "completed", FINISH)

    records = handler.requests(kind="steps")
    groups = group(records)
    assert set(codes) <= {200, 201}
    assert_completed(documents, DIAMOND)
    assert_every_step_requested(groups, ids)
    assert_signed(records)
    assert_webhook_ids_kept(groups)
    assert_dependencies_answered_first(groups, ids)
    assert all(distinct < total for _, distinct, _ in kills), f"a kill came too late: {kills}"
    # Answers given after a kill reached no one: each of those steps was sent again.
    orphans = [(killed_at, r) for killed_at, _, _ in kills for r in lost(records, killed_at)]
    for killed_at, record in orphans:
        key = (record["headers"]["baton-workflow-id"], record["name"])
        again = [r for r in groups[key] if r["received_mono"] > killed_at]
        assert again, f"{key} was in flight at a kill and never sent again"
        assert again[-1]["response_status"] == 200
    assert orphans, f"no request was in flight at any kill: {kills}"


def test_sigterm_lets_requests_in_flight_finish_and_records_them(
    baton_factory: BatonFactory, handler: HandlerClient
) -> None:
    grace = 10.0
    dag = {"slow": [], "after": ["slow"]}
    script_delays(handler, {"slow": 2.0})
    server = baton_factory.create(
        extra_env={"BATON_SHUTDOWN_GRACE": str(grace), "BATON_LEASE_SECONDS": str(LEASE)}
    )
    ids = [unique_id(f"term-{i}") for i in range(4)]
    with server.client() as api:
        api.create_many([dag_body(handler, wid, dag) for wid in ids])
    wait_stats(handler, lambda s: s["inflight"] >= len(ids), 20, "all slow steps in flight")

    sent_term = time.monotonic()
    code = server.stop(timeout=grace + 10)
    exited = time.monotonic()

    assert exited - sent_term < grace, f"took {exited - sent_term:.1f} s to stop"
    slow = handler.requests("slow")
    assert len(slow) == len(ids)
    # Finished, not cut off: answered in full before the process was gone.
    assert all(r["response_status"] == 200 and r["ended_mono"] < exited for r in slow)
    # Stopping means no new claims: the dependents were not sent on the way out.
    assert handler.requests("after") == []

    restarted = time.monotonic()
    server.restart()
    with server.client() as api:
        for wid in ids:
            step = steps_by_id(api.get(wid))["slow"]
            assert (step["status"], step["attempts"]) == ("completed", 1), step
            assert step["result"] == {"step": handler.name("slow"), "attempt": 1}
        documents = api.wait_all(ids, "completed", FINISH)
    # Wait out a lease: an outcome that had not been recorded would be sent again by now.
    time.sleep(LEASE + 1)

    groups = group(handler.requests(kind="steps"))
    assert_completed(documents, dag)
    assert_every_step_requested(groups, ids, dag)
    assert_exactly_once(groups)
    assert all(r["received_mono"] > restarted for r in handler.requests("after"))
    # Last, so that a wrong exit code does not hide how the shutdown itself went.
    assert_clean_sigterm_exit(server, code)


def test_sigterm_releases_a_request_that_outlasts_the_grace(
    baton_factory: BatonFactory, handler: HandlerClient
) -> None:
    grace = 1.0
    dag = {"long": [], "next": ["long"]}
    # The first request outlasts the grace; the one sent after the restart is quick.
    handler.script(long=[{"delay": 6.0}, {"delay": 0}])
    server = baton_factory.create(
        extra_env={"BATON_SHUTDOWN_GRACE": str(grace), "BATON_LEASE_SECONDS": str(LEASE)}
    )
    wid = unique_id("outlast")
    with server.client() as api:
        api.create(dag_body(handler, wid, dag))
    wait_stats(handler, lambda s: s["inflight"] >= 1, 20, "the long step in flight")

    sent_term = time.monotonic()
    code = server.stop(timeout=grace + 10)
    exited = time.monotonic()

    assert exited - sent_term < grace + 3, f"took {exited - sent_term:.1f} s to stop"

    restarted = time.monotonic()
    server.restart()
    with server.client() as api:
        document = api.wait_status(wid, "completed", 30)

    groups = group(handler.requests(kind="steps", workflow_id=wid))
    long = groups[(wid, "long")]
    assert len(long) == 2, [(r["received_mono"], r["ended_mono"]) for r in long]
    assert long[1]["received_mono"] > restarted
    assert_webhook_ids_kept(groups)
    assert_completed({wid: document}, dag)
    # The first answer reached no one; the dependent waited for the second.
    [after] = groups[(wid, "next")]
    assert after["received_mono"] >= long[1]["ended_mono"]
    assert_clean_sigterm_exit(server, code)
