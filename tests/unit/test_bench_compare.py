"""The benchmark's side-by-side tables: ratios to BullMQ and the verdicts of Baton's targets."""

from __future__ import annotations

from typing import Any

import pytest

from bench.compare import side_by_side

SIZES = {"w1_workflows": 500, "w3_chain": 100, "j1_jobs": 10_000, "j1_batch": 500}


def ok(**metrics: float) -> dict[str, Any]:
    return {"status": "ok", "error": None, "metrics": metrics}


def table(tables: list[Any], prefix: str) -> dict[str, list[str]]:
    """The table whose title starts with ``prefix``, as {system label: row}."""
    (found,) = [t for t in tables if t.title.startswith(prefix)]
    return {row[0]: row for row in found.rows}


PEERS = {
    "bullmq": {
        "W1": ok(steps_per_second=2000.0, latency_p50_s=0.6, latency_p99_s=0.7),
        "W3": ok(hop_mean_ms=0.8, hop_p50_ms=0.7, hop_p99_ms=4.0),
        "J1": ok(jobs_per_second=10_000.0, latency_p50_ms=4.0, latency_p99_ms=18.0),
    },
    "celery": {"W1": ok(steps_per_second=500.0), "W3": ok(hop_mean_ms=1.7)},
    "dbos-sqlite": {"W1": ok(steps_per_second=100.0), "W3": ok(hop_mean_ms=4.3)},
}
BULLMQ = "BullMQ FlowProducer (Node, Redis; no HTTP per step)"
BATON_SQLITE = "Baton, SQLite (a signed HTTP POST per step)"
BATON_PG = "Baton, PostgreSQL (a signed HTTP POST per step)"


@pytest.mark.parametrize(
    ("sqlite_sps", "pg_sps", "sqlite_result", "pg_result"),
    [
        (1500.0, 1200.0, "pass", "pass"),  # exactly 0.75 × and 0.6 ×
        (1499.0, 1199.0, "**miss**", "**miss**"),
    ],
)
def test_w1_ratio_targets(
    sqlite_sps: float, pg_sps: float, sqlite_result: str, pg_result: str
) -> None:
    baton = {
        "sqlite": {"W1": ok(steps_per_second=sqlite_sps)},
        "postgres": {"W1": ok(steps_per_second=pg_sps)},
    }
    rows = table(side_by_side(baton, PEERS, SIZES), "W1: 500 diamonds")
    assert list(rows) == [
        BULLMQ,
        "Celery 5 chain + chord (Redis, prefork; no HTTP per step)",
        "DBOS Transact, SQLite (an HTTP POST per step)",
        BATON_SQLITE,
        BATON_PG,
    ]
    assert rows[BULLMQ][2] == "1.00 ×"
    assert rows["Celery 5 chain + chord (Redis, prefork; no HTTP per step)"][2] == "0.25 ×"
    assert rows[BATON_SQLITE][4] == "≥ 0.75 × BullMQ (1,500)"
    assert rows[BATON_SQLITE][5] == sqlite_result
    assert rows[BATON_PG][4] == "≥ 0.6 × BullMQ (1,200)"
    assert rows[BATON_PG][5] == pg_result
    assert rows[BULLMQ][5] == "—"  # peers carry no verdict


def test_w3_hop_targets_are_over_bullmq() -> None:
    baton = {
        "sqlite": {"W3": ok(hop_mean_ms=1.8, hop_p50_ms=1.6, hop_p99_ms=5.0)},
        "postgres": {"W3": ok(hop_mean_ms=3.31)},
    }
    rows = table(side_by_side(baton, PEERS, SIZES), "W3: a chain of 100")
    assert rows[BATON_SQLITE][1:] == [
        "1.80 / 1.60 / 5.00 ms",
        "2.2 ×",
        "+1.00 ms",
        "≤ BullMQ + 1.0 ms (1.80 ms)",
        "pass",
    ]
    assert rows[BATON_PG][3:] == ["+2.51 ms", "≤ BullMQ + 2.5 ms (3.30 ms)", "**miss**"]


def test_without_bullmq_there_is_no_ratio_and_no_verdict() -> None:
    peers = {"bullmq": {"W1": {"status": "error", "error": "Error: ECONNREFUSED", "metrics": {}}}}
    baton = {"sqlite": {"W1": ok(steps_per_second=1200.0)}}
    rows = table(side_by_side(baton, peers, SIZES), "W1")
    assert rows[BULLMQ][1] == "error: Error: ECONNREFUSED"
    assert rows[BULLMQ][5] == "—"
    assert rows[BATON_SQLITE][2] == "— ×"
    assert rows[BATON_SQLITE][4] == "≥ 0.75 × BullMQ"
    assert rows[BATON_SQLITE][5] == "—"


def test_a_failed_baton_run_is_a_miss() -> None:
    baton = {"sqlite": {"W1": {"status": "timeout", "error": "did not finish", "metrics": {}}}}
    rows = table(side_by_side(baton, PEERS, SIZES), "W1")
    assert rows[BATON_SQLITE][1] == "timeout: did not finish"
    assert rows[BATON_SQLITE][5] == "**miss**"


def test_baton_j1_rows_slot_in_beside_bullmq() -> None:
    rows = table(side_by_side({"sqlite": {}}, PEERS, SIZES), "J1: 10,000 jobs")
    assert list(rows) == ["BullMQ queue (addBulk, a Worker at concurrency 50; no HTTP)"]
    baton = {
        "sqlite": {"J1": ok(jobs_per_second=1500.0, latency_p50_ms=3.0, latency_p99_ms=9.5)},
        "postgres": {"J1": ok(jobs_per_second=900.0)},
    }
    rows = table(side_by_side(baton, PEERS, SIZES), "J1")
    assert rows["Baton, SQLite"][1:] == [
        "1,500",
        "0.15 ×",
        "3.0 / 9.5 ms",
        "≥ 1,500 jobs/s",
        "pass",
    ]
    assert rows["Baton, PostgreSQL"][4:] == ["—", "—"]  # no J1 target on PostgreSQL


def test_tables_without_rows_are_left_out() -> None:
    tables = side_by_side({"sqlite": {"W2": ok(wall_seconds=1.0)}}, {}, SIZES)
    assert tables == []
