"""The side-by-side tables: Baton and its peers on W1, W3 and J1, every row as a ratio to BullMQ.

Rows appear for what the run measured: the peers with ``--peers``, Baton per
database. Baton's rows carry the targets of the speed issue as verdicts, judged
against BullMQ's figure of the same run:

* W1 steps/s ≥ 0.75 × BullMQ on SQLite, ≥ 0.6 × on PostgreSQL;
* W3 mean hop ≤ BullMQ's + 1.0 ms on SQLite, + 2.5 ms on PostgreSQL;
* J1 ≥ 1,500 jobs/s on SQLite (an absolute target; the ratio is reported).

Baton's J1 rows appear once ``bench/workloads.py`` has a J1 workload (its
metrics named ``jobs_per_second``, ``latency_p50_ms`` and ``latency_p99_ms``,
as BullMQ's are).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.tables import fmt, verdict

#: Row labels, in table order: (system key, label).
SYSTEMS = (
    ("bullmq", "BullMQ FlowProducer (Node, Redis; no HTTP per step)"),
    ("celery", "Celery 5 chain + chord (Redis, prefork; no HTTP per step)"),
    ("dbos-sqlite", "DBOS Transact, SQLite (an HTTP POST per step)"),
    ("dbos-postgres", "DBOS Transact, PostgreSQL (an HTTP POST per step)"),
    ("baton-sqlite", "Baton, SQLite (a signed HTTP POST per step)"),
    ("baton-postgres", "Baton, PostgreSQL (a signed HTTP POST per step)"),
)
J1_SYSTEMS = (
    ("bullmq", "BullMQ queue (addBulk, a Worker at concurrency 50; no HTTP)"),
    ("baton-sqlite", "Baton, SQLite"),
    ("baton-postgres", "Baton, PostgreSQL"),
)
#: Baton's targets per database: W1 ratio to BullMQ, W3 hop over BullMQ's (ms), J1 jobs/s.
W1_RATIO = {"sqlite": 0.75, "postgres": 0.6}
W3_OVER_MS = {"sqlite": 1.0, "postgres": 2.5}
J1_JOBS = {"sqlite": 1500.0}


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]

    def as_dict(self) -> dict[str, Any]:
        return {"title": self.title, "header": self.header, "rows": self.rows}


def _ok(outcome: dict[str, Any]) -> bool:
    return bool(outcome.get("status") == "ok")


#: What a table's row function returns: its middle cells, the target, the verdict.
Cells = tuple[list[str], str, bool | None]
RowFn = Callable[[dict[str, Any], str | None, float | None], Cells]


def _table(
    workload: str,
    reference: str,
    systems: tuple[tuple[str, str], ...],
    header: list[str],
    row: RowFn,
    baton: dict[str, dict[str, Any]],
    peers: dict[str, dict[str, Any]],
) -> list[list[str]]:
    """One row per system that ran ``workload``: label, ``row(metrics, kind, ref)``, verdict.

    ``ref`` is BullMQ's metric ``reference`` (None if BullMQ did not run or
    failed); ``kind`` is Baton's database, None for a peer. A failed run is
    one row with its status and error (a miss for Baton).
    """
    outcomes = {key: res[workload] for key, res in peers.items() if workload in res}
    for database, res in baton.items():
        if workload in res:
            outcomes[f"baton-{database}"] = res[workload]
    bullmq = outcomes.get("bullmq")
    ref = bullmq["metrics"].get(reference) if bullmq and _ok(bullmq) else None
    rows = []
    for key, label in systems:
        out = outcomes.get(key)
        if out is None:
            continue
        kind = key.removeprefix("baton-") if key.startswith("baton-") else None
        if not _ok(out):
            error = (out.get("error") or "").splitlines()[:1]
            text = f"{out.get('status')}: {error[0] if error else ''}".replace("|", "/")
            rows.append(
                [label, text[:120]] + ["—"] * (len(header) - 3) + [verdict(False if kind else None)]
            )
            continue
        cells, target, ok = row(out["metrics"], kind, ref)
        rows.append([label, *cells, target, verdict(ok)])
    return rows


def _ratio(value: float | None, ref: float | None) -> float | None:
    return value / ref if value is not None and ref else None


def _w1_row(m: dict[str, Any], kind: str | None, ref: float | None) -> Cells:
    sps = m.get("steps_per_second")
    ratio = _ratio(sps, ref)
    target, ok = "—", None
    if kind in W1_RATIO:
        floor = W1_RATIO[kind]
        target = f"≥ {floor} × BullMQ" + (f" ({fmt(floor * ref)})" if ref else "")
        ok = None if ratio is None else ratio >= floor
    latency = f"{fmt(m.get('latency_p50_s'), 2)} / {fmt(m.get('latency_p99_s'), 2)} s"
    return [fmt(sps), f"{fmt(ratio, 2)} ×", latency], target, ok


def _w3_row(m: dict[str, Any], kind: str | None, ref: float | None) -> Cells:
    mean = m.get("hop_mean_ms")
    over = mean - ref if mean is not None and ref is not None else None
    target, ok = "—", None
    if kind in W3_OVER_MS:
        allowed = W3_OVER_MS[kind]
        target = f"≤ BullMQ + {allowed} ms"
        if ref is not None:
            target += f" ({fmt(ref + allowed, 2, 'ms')})"
        ok = None if over is None else over <= allowed
    hops = f"{fmt(mean, 2)} / {fmt(m.get('hop_p50_ms'), 2)} / {fmt(m.get('hop_p99_ms'), 2)} ms"
    sign = "+" if over is not None and over >= 0 else ""
    cells = [hops, f"{fmt(_ratio(mean, ref), 1)} ×", f"{sign}{fmt(over, 2, 'ms')}"]
    return cells, target, ok


def _j1_row(m: dict[str, Any], kind: str | None, ref: float | None) -> Cells:
    jps = m.get("jobs_per_second")
    target, ok = "—", None
    if kind in J1_JOBS:
        target = f"≥ {fmt(J1_JOBS[kind])} jobs/s"
        ok = None if jps is None else jps >= J1_JOBS[kind]
    latency = f"{fmt(m.get('latency_p50_ms'), 1)} / {fmt(m.get('latency_p99_ms'), 1)} ms"
    return [fmt(jps), f"{fmt(_ratio(jps, ref), 2)} ×", latency], target, ok


def side_by_side(
    baton: dict[str, dict[str, Any]], peers: dict[str, dict[str, Any]], sizes: dict[str, Any]
) -> list[Table]:
    """The W1, W3 and J1 tables that have rows.

    ``baton`` is Baton's results by database, ``peers`` the peers' by key (as
    :func:`bench.peers.suite.run_peers` returns them), ``sizes`` the run's sizes.
    """
    w1_header = ["system", "W1 steps/s", "× BullMQ", "latency p50 / p99", "target", "result"]
    w3_header = ["system", "W3 hop mean / p50 / p99", "× BullMQ", "BullMQ +", "target", "result"]
    j1_header = ["system", "J1 jobs/s", "× BullMQ", "claim → complete p50 / p99"]
    j1_header += ["target", "result"]
    tables = [
        Table(
            f"W1: {sizes['w1_workflows']} diamonds (start → a, b → merge), steps/s",
            w1_header,
            _table("W1", "steps_per_second", SYSTEMS, w1_header, _w1_row, baton, peers),
        ),
        Table(
            f"W3: a chain of {sizes['w3_chain']} steps, hop between steps",
            w3_header,
            _table("W3", "hop_mean_ms", SYSTEMS, w3_header, _w3_row, baton, peers),
        ),
        Table(
            f"J1: {fmt(sizes['j1_jobs'])} jobs enqueued in batches of {sizes['j1_batch']}, "
            "then drained",
            j1_header,
            _table("J1", "jobs_per_second", J1_SYSTEMS, j1_header, _j1_row, baton, peers),
        ),
    ]
    return [t for t in tables if t.rows]
