"""The Celery 5 peer of Baton's benchmark: W1 as chain + chord, W3 as a chain, over Redis.

Runs in its own virtualenv (``bench/.peers/celery``, see
``requirements-celery.txt``), with ``bench/peers`` on ``PYTHONPATH``. The
worker is Celery's own, prefork pool::

    celery --app celery_peer worker --pool prefork --without-gossip --without-mingle \\
        --without-heartbeat --loglevel warning

and this module's command line drives it and prints one JSON object (the
metrics, named as bench/workloads.py names Baton's) on stdout::

    python bench/peers/celery_peer.py w1 [--workflows 500]
    python bench/peers/celery_peer.py w3 [--steps 100]
    python bench/peers/celery_peer.py clean

Redis (broker and result backend) is ``BENCH_PEER_REDIS`` (default
``redis://127.0.0.1:6379/12``); every key Celery and kombu make there starts
with ``BENCH_PEER_PREFIX`` + ``:`` (kombu's ``global_keyprefix``, default
``baton-bench-celery``), and ``clean`` deletes exactly those keys.

A task does no I/O (no HTTP per step): it returns at once with the times it
started and ended, which give W3's hop (start of step n+1 - end of step n, the
same measure as Baton's handler-answer -> next-arrival). Results flow as Celery
passes them: a chain hands each task its predecessor's result, a chord hands
the merge the list of its header's results.

* W1: ``chain(start, chord([a, b], merge))`` per workflow, N of them sent one
  after another from this process (Celery's client is synchronous); a workflow
  ends at its merge's ``date_done`` in the result backend.
* W3: ``chain`` of N tasks, one workflow.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime
from typing import Any

from celery import Celery, chain, chord
from celery.result import AsyncResult
from peer_common import emit, percentile

REDIS = os.environ.get("BENCH_PEER_REDIS", "redis://127.0.0.1:6379/12")
PREFIX = os.environ.get("BENCH_PEER_PREFIX", "baton-bench-celery")
#: How long the driver waits for the worker to answer a ping, and for results.
READY_LIMIT = 60.0
RESULT_LIMIT = 300.0

app = Celery("celery_peer", broker=REDIS, backend=REDIS)
app.conf.update(
    broker_transport_options={"global_keyprefix": f"{PREFIX}:"},
    result_backend_transport_options={"global_keyprefix": f"{PREFIX}:"},
    broker_connection_retry_on_startup=True,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_hijack_root_logger=False,
)


@app.task(name="step")
def step(previous: Any = None, step_id: str = "") -> dict[str, Any]:
    """One step: no work, its result and when it ran."""
    started = time.time()
    return {"ok": True, "n": 1, "step": step_id, "started": started, "ended": time.time()}


def done_at(result: AsyncResult) -> float:
    """When the backend recorded the task as done (microsecond precision)."""
    value = result.date_done
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value is None:
        raise RuntimeError(f"task {result.id} has no date_done")
    return value.timestamp()


def wait_for_worker() -> None:
    deadline = time.monotonic() + READY_LIMIT
    while time.monotonic() < deadline:
        if app.control.ping(timeout=0.5):
            return
    raise RuntimeError(f"no Celery worker answered within {READY_LIMIT:g} s")


def w1(workflows: int) -> dict[str, Any]:
    sent: dict[str, float] = {}
    results: dict[str, AsyncResult] = {}
    first = time.time()
    for i in range(workflows):
        workflow_id = f"w1-{i:05d}"
        diamond = chain(
            step.s(step_id="start"),
            chord([step.s(step_id="a"), step.s(step_id="b")], step.s(step_id="merge")),
        )
        sent[workflow_id] = time.time()
        results[workflow_id] = diamond.apply_async()
    submit_seconds = time.time() - first
    for result in results.values():
        result.get(timeout=RESULT_LIMIT)
    detected_seconds = time.time() - first
    finished = {w: done_at(r) for w, r in results.items()}
    wall = max(finished.values()) - first
    latencies = [finished[w] - sent[w] for w in finished]
    return {
        "workflows": workflows,
        "steps": 4 * workflows,
        "concurrency": 1,
        "completed": len(finished),
        "submit_seconds": submit_seconds,
        "detected_seconds": detected_seconds,
        "wall_seconds": wall,
        "steps_per_second": 4 * len(finished) / wall,
        "latency_p50_s": percentile(latencies, 50),
        "latency_p99_s": percentile(latencies, 99),
        "latency_max_s": max(latencies),
    }


def w3(steps: int) -> dict[str, Any]:
    ids = [f"c{i:04d}" for i in range(steps)]
    sent = time.time()
    last = chain(*(step.s(step_id=i) for i in ids)).apply_async()
    last.get(timeout=RESULT_LIMIT)
    wall = done_at(last) - sent
    values: list[dict[str, Any]] = []
    node: AsyncResult | None = last
    while node is not None:
        values.append(node.get(timeout=RESULT_LIMIT))
        node = node.parent
    values.reverse()
    if [v["step"] for v in values] != ids:
        raise RuntimeError("the chain's results are not its steps in order")
    hops = [values[i + 1]["started"] - values[i]["ended"] for i in range(steps - 1)]
    return {
        "steps": steps,
        "hops": len(hops),
        "hop_mean_ms": 1000 * sum(hops) / len(hops),
        "hop_p50_ms": 1000 * percentile(hops, 50),
        "hop_p99_ms": 1000 * percentile(hops, 99),
        "hop_max_ms": 1000 * max(hops),
        "first_hop_ms": 1000 * (values[0]["started"] - sent),
        "wall_seconds": wall,
    }


def clean() -> dict[str, Any]:
    client = app.backend.client  # a redis-py client on the same database
    deleted = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"{PREFIX}:*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            deleted += client.unlink(*batch)
            batch.clear()
    if batch:
        deleted += client.unlink(*batch)
    return {"deleted": deleted}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["w1", "w3", "clean"])
    parser.add_argument("--workflows", type=int, default=500)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()

    def measure() -> dict[str, Any]:
        if args.command == "clean":
            return clean()
        wait_for_worker()
        return w1(args.workflows) if args.command == "w1" else w3(args.steps)

    return emit(measure)


if __name__ == "__main__":
    sys.exit(main())
