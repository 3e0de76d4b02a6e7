"""The peers' part of a benchmark run: start each peer, run its workloads, collect the outcomes.

Called by ``bench/run.py --peers`` after Baton's workloads, in the same run and
against the same handler process. Every peer workload gets fresh workers, as
every Baton workload gets a fresh server:

* **BullMQ** (``bullmq_peer.js``, Node): per W1/W3 a worker process at
  concurrency 64 (Baton's 64 requests in flight) on a queue of its own, then
  the driver process; J1 is one process (enqueue, then drain).
* **Celery** (``celery_peer.py``): per W1/W3 a ``celery worker`` (prefork pool,
  Celery's default size: one process per core), then the driver.
* **DBOS** (``dbos_peer.py``): per database and workload one process on a fresh
  system database (a SQLite file, or a PostgreSQL database made and dropped
  here), its steps POSTing to the bench handler.

Redis keys live in database 12 of the local server under a prefix per peer;
each peer's keys are deleted before it starts and after it ends. Each workload
is bounded by :data:`PEER_LIMIT`; one that fails or runs out is recorded as
such (status and the script's last output lines) and the run goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from bench import workloads as wl
from bench.peers.install import CELERY, DBOS, PEERS_SRC
from bench.processes import database, spawn, stop, tail

REDIS_URL = "redis://127.0.0.1:6379/12"
BULLMQ_PREFIX = "baton-bench-bullmq"
CELERY_PREFIX = "baton-bench-celery"
#: Each peer workload gets at most this long.
PEER_LIMIT = 180.0
#: BullMQ's worker concurrency on W1/W3: Baton sends at most 64 requests at once.
BULLMQ_CONCURRENCY = 64
#: J1's BullMQ worker concurrency (issue's figure: a worker at concurrency 50).
J1_CONCURRENCY = 50

#: The workloads each peer runs (filtered by ``--only``).
PEER_WORKLOADS = {"bullmq": ("W1", "W3", "J1"), "celery": ("W1", "W3"), "dbos": ("W1", "W3")}

Body = Callable[[wl.Outcome], Awaitable[None]]


async def run_script(argv: list[str], env: dict[str, str], log: Path) -> dict[str, Any]:
    """Run a peer script to its end and return the JSON object it printed."""
    out = log.with_suffix(".json")
    proc = spawn(argv, env, log, stdout=out)
    try:
        # Cancelled (the workload's time limit), the wait's thread ends with the process.
        await asyncio.to_thread(proc.wait)
    finally:
        stop(proc)
    if proc.returncode != 0:
        raise RuntimeError(f"{Path(argv[1]).name} exited with {proc.returncode}: {tail(log, 5)}")
    result: dict[str, Any] = json.loads(out.read_text())
    return result


@contextlib.asynccontextmanager
async def worker(argv: list[str], env: dict[str, str], log: Path) -> AsyncIterator[None]:
    """A peer's worker process for the duration of one workload."""
    proc = spawn(argv, env, log)
    try:
        yield
    except Exception as exc:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited with {proc.returncode}: {tail(log, 5)}") from exc
        raise
    finally:
        stop(proc)


async def measure(peer: str, name: str, body: Body) -> dict[str, Any]:
    out = await wl.run_bounded(wl.Outcome(name), body, PEER_LIMIT)
    print(f"   {peer:13} {name:3} {out.status:7} {out.seconds:6.1f} s  {out.brief()}", flush=True)
    return out.as_dict()


async def clean_redis(argv: list[str], env: dict[str, str], log: Path) -> None:
    """Delete the peer's keys; a failure is reported, not fatal (the next run cleans again)."""
    try:
        await run_script(argv, env, log)
    except (RuntimeError, ValueError, OSError) as exc:
        print(f"   warning: could not clean the peer's Redis keys: {exc}", flush=True)


# --------------------------------------------------------------------------- BullMQ


async def run_bullmq(only: list[str], sizes: wl.Sizes, tmp: Path) -> dict[str, Any]:
    script = str(PEERS_SRC / "bullmq_peer.js")
    env = dict(os.environ)

    def argv(command: str, queue: str = "", **options: int) -> list[str]:
        args = ["node", script, command, "--redis", REDIS_URL, "--prefix", BULLMQ_PREFIX]
        if queue:
            args += ["--queue", queue]
        for key, value in options.items():
            args += [f"--{key.replace('_', '-')}", str(value)]
        return args

    def flow(name: str, **options: int) -> Body:
        async def body(out: wl.Outcome) -> None:
            queue = f"{name.lower()}-{secrets.token_hex(3)}"
            serve = argv("worker", queue, concurrency=BULLMQ_CONCURRENCY)
            async with worker(serve, env, tmp / f"bullmq-{name}-worker.log"):
                command = argv(name.lower(), queue, **options)
                out.metrics.update(await run_script(command, env, tmp / f"bullmq-{name}.log"))

        return body

    async def j1(out: wl.Outcome) -> None:
        command = argv(
            "j1",
            f"j1-{secrets.token_hex(3)}",
            jobs=sizes.j1_jobs,
            batch=sizes.j1_batch,
            concurrency=J1_CONCURRENCY,
        )
        out.metrics.update(await run_script(command, env, tmp / "bullmq-J1.log"))

    bodies: dict[str, Body] = {
        "W1": flow("W1", workflows=sizes.w1_workflows, in_flight=sizes.w1_concurrency),
        "W3": flow("W3", steps=sizes.w3_chain),
        "J1": j1,
    }
    clean = argv("clean")
    results: dict[str, Any] = {}
    await clean_redis(clean, env, tmp / "bullmq-clean.log")
    try:
        for name in only:
            results[name] = await measure("bullmq", name, bodies[name])
    finally:
        await clean_redis(clean, env, tmp / "bullmq-clean.log")
    return results


# --------------------------------------------------------------------------- Celery


async def run_celery(only: list[str], sizes: wl.Sizes, tmp: Path) -> dict[str, Any]:
    env = dict(os.environ)
    # Only the peer's folder: nothing of Baton's environment leaks into Celery's.
    env.update(
        PYTHONPATH=str(PEERS_SRC), BENCH_PEER_REDIS=REDIS_URL, BENCH_PEER_PREFIX=CELERY_PREFIX
    )
    driver = [str(CELERY.python), str(PEERS_SRC / "celery_peer.py")]
    serve = [str(CELERY.bin("celery")), "--app", "celery_peer", "worker", "--pool", "prefork"]
    serve += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    serve += ["--loglevel", "warning"]
    options = {
        "W1": ["--workflows", str(sizes.w1_workflows)],
        "W3": ["--steps", str(sizes.w3_chain)],
    }
    clean = [*driver, "clean"]
    results: dict[str, Any] = {}

    def body(name: str) -> Body:
        async def run(out: wl.Outcome) -> None:
            async with worker(serve, env, tmp / f"celery-{name}-worker.log"):
                command = [*driver, name.lower(), *options[name]]
                out.metrics.update(await run_script(command, env, tmp / f"celery-{name}.log"))

        return run

    await clean_redis(clean, env, tmp / "celery-clean.log")
    try:
        for name in only:
            results[name] = await measure("celery", name, body(name))
            await clean_redis(clean, env, tmp / "celery-clean.log")
    finally:
        await clean_redis(clean, env, tmp / "celery-clean.log")
    return results


# --------------------------------------------------------------------------- DBOS


@contextlib.asynccontextmanager
async def system_database(kind: str, name: str, tmp: Path) -> AsyncIterator[str]:
    """A fresh DBOS system database: a SQLite file, or a PostgreSQL database dropped after."""
    if kind == "sqlite":
        yield f"sqlite:///{tempfile.mkdtemp(prefix='dbos-', dir=tmp)}/dbos.sqlite"
        return
    async with database(kind, f"dbos_{name}") as url:
        yield url.replace("postgres://", "postgresql://", 1)


async def run_dbos(
    kind: str, only: list[str], sizes: wl.Sizes, handler: wl.Handler, tmp: Path
) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(PEERS_SRC)
    driver = [str(DBOS.python), str(PEERS_SRC / "dbos_peer.py")]
    results: dict[str, Any] = {}

    def body(name: str) -> Body:
        async def run(out: wl.Outcome) -> None:
            async with system_database(kind, name, tmp) as url:
                await handler.reset()
                command = [*driver, name.lower(), "--db", url, "--handler", handler.step_url]
                if name == "W1":
                    command += ["--workflows", str(sizes.w1_workflows)]
                    command += ["--in-flight", str(sizes.w1_concurrency)]
                else:
                    command += ["--steps", str(sizes.w3_chain)]
                result = await run_script(command, env, tmp / f"dbos-{kind}-{name}.log")
                out.metrics.update(result)
                if name == "W3":
                    ids = wl.chain_ids(sizes.w3_chain)
                    out.metrics.update(await wl.chain_hops(handler, ids, result["sent"]))
                out.metrics["handler_requests"] = (await handler.stats())["count"]

        return run

    for name in only:
        results[name] = await measure(f"dbos-{kind}", name, body(name))
    return results


# --------------------------------------------------------------------------- all


async def run_peers(
    kinds: list[str], only: list[str], sizes: wl.Sizes, handler: wl.Handler, tmp: Path
) -> dict[str, dict[str, Any]]:
    """Every peer's outcomes, by peer (bullmq, celery, dbos-sqlite, dbos-postgres) and workload."""
    print("\n== peers", flush=True)

    def chosen(peer: str) -> list[str]:
        return [w for w in PEER_WORKLOADS[peer] if w in only]

    results: dict[str, dict[str, Any]] = {}
    if chosen("bullmq"):
        results["bullmq"] = await run_bullmq(chosen("bullmq"), sizes, tmp)
    if chosen("celery"):
        results["celery"] = await run_celery(chosen("celery"), sizes, tmp)
    if chosen("dbos"):
        for kind in kinds:
            results[f"dbos-{kind}"] = await run_dbos(kind, chosen("dbos"), sizes, handler, tmp)
    return results
