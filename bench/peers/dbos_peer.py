"""The DBOS Transact peer of Baton's benchmark: W1 and W3 as durable async workflows.

Runs in its own virtualenv (``bench/.peers/dbos``, see ``requirements-dbos.txt``)::

    python bench/peers/dbos_peer.py w1 --db URL --handler URL [--workflows 500]
    python bench/peers/dbos_peer.py w3 --db URL --handler URL [--steps 100]

``--db`` is DBOS's system database: ``sqlite:///path/file.sqlite`` or
``postgresql://user@host:port/name``. DBOS is a library: the workflows run in
this process, which starts them and waits for them, checkpointing every step
in the system database as it goes. Each step is one HTTP POST (httpx, a pooled
``AsyncClient`` with at most 64 connections, Baton's own limit) to the same
bench handler Baton calls, with the step id in ``Baton-Step-Id`` so that the
handler's records give W3's hops exactly as for Baton; its JSON answer is the
step's result and goes to the steps after it.

* W1: ``diamond`` runs ``start``, then ``a`` and ``b`` at once (asyncio.gather
  of two steps, DBOS's way to run steps concurrently), then ``merge`` with both
  results. N workflows are started with ``DBOS.start_workflow_async``, at most
  ``--in-flight`` starts at a time; a workflow ends when its handle's result
  is there (the workflow runs in this process: that is when it returned,
  its output recorded). DBOS's own ``updated_at`` is not used: on SQLite
  under Python 3.11 it has whole-second precision.
* W3: ``chain`` runs N steps one after another, each given the previous result.

Prints one JSON object (the metrics, named as bench/workloads.py names
Baton's) on stdout and exits 0, or prints the error on stderr and exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import httpx
from dbos import DBOS, DBOSConfig, SetWorkflowID, WorkflowHandleAsync
from peer_common import emit, percentile

#: Baton's delivery limit: at most this many connections to the handler.
CONNECTIONS = 64

_client: httpx.AsyncClient | None = None
_handler_url = ""


@DBOS.step()
async def post(step_id: str, previous: Any) -> Any:
    """One step: POST to the handler; its JSON answer is the step's result."""
    assert _client is not None
    body = {"workflowId": DBOS.workflow_id, "stepId": step_id, "previous": previous}
    response = await _client.post(_handler_url, json=body, headers={"Baton-Step-Id": step_id})
    response.raise_for_status()
    return response.json()


@DBOS.workflow()
async def diamond() -> Any:
    """W1: start -> (a, b) -> merge."""
    start = await post("start", None)
    a, b = await asyncio.gather(post("a", start), post("b", start))
    return await post("merge", {"a": a, "b": b})


@DBOS.workflow()
async def chain(steps: int) -> Any:
    """W3: steps c0000 .. c(N-1), one after another."""
    previous = None
    for i in range(steps):
        previous = await post(f"c{i:04d}", previous)
    return previous


async def w1(workflows: int, in_flight: int) -> dict[str, Any]:
    sent: dict[str, float] = {}
    finished: dict[str, float] = {}
    waiters: list[asyncio.Task[None]] = []
    semaphore = asyncio.Semaphore(in_flight)

    async def finish(workflow_id: str, handle: WorkflowHandleAsync[Any]) -> None:
        await handle.get_result()
        finished[workflow_id] = time.time()

    async def submit(i: int) -> None:
        workflow_id = f"w1-{i:05d}"
        async with semaphore:
            sent[workflow_id] = time.time()
            with SetWorkflowID(workflow_id):
                handle = await DBOS.start_workflow_async(diamond)
        waiters.append(asyncio.create_task(finish(workflow_id, handle)))

    first = time.time()
    await asyncio.gather(*(submit(i) for i in range(workflows)))
    submit_seconds = time.time() - first
    await asyncio.gather(*waiters)
    wall = max(finished.values()) - first
    latencies = [finished[w] - sent[w] for w in finished]
    return {
        "workflows": workflows,
        "steps": 4 * workflows,
        "concurrency": in_flight,
        "completed": len(finished),
        "submit_seconds": submit_seconds,
        "wall_seconds": wall,
        "steps_per_second": 4 * len(finished) / wall,
        "latency_p50_s": percentile(latencies, 50),
        "latency_p99_s": percentile(latencies, 99),
        "latency_max_s": max(latencies),
    }


async def w3(steps: int) -> dict[str, Any]:
    sent = time.time()
    with SetWorkflowID("w3-chain"):
        handle = await DBOS.start_workflow_async(chain, steps)
    await handle.get_result()
    return {"steps": steps, "sent": sent, "wall_seconds": time.time() - sent}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    global _client, _handler_url
    _handler_url = args.handler
    config: DBOSConfig = {
        "name": "baton-bench",
        "system_database_url": args.db,
        "run_admin_server": False,
        "log_level": "WARNING",
    }
    DBOS(config=config)
    DBOS.launch()
    _client = httpx.AsyncClient(
        limits=httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS),
        timeout=httpx.Timeout(60),
    )
    try:
        if args.workload == "w1":
            return await w1(args.workflows, args.in_flight)
        return await w3(args.steps)
    finally:
        await _client.aclose()
        DBOS.destroy()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workload", choices=["w1", "w3"])
    parser.add_argument("--db", required=True, help="DBOS system database URL")
    parser.add_argument("--handler", required=True, help="the bench handler's step URL")
    parser.add_argument("--workflows", type=int, default=500)
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    return emit(lambda: asyncio.run(run(args)))


if __name__ == "__main__":
    sys.exit(main())
