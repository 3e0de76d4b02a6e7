"""The benchmark workloads: each one drives a running Baton server (or, for RAW, the handler).

Every workload function fills a :class:`Outcome` as it goes, so a workload cut
short by its time limit still reports what it had measured. Times that must be
compared across processes (a workflow's ``completedAt``, the handler's arrival
times) are wall-clock ``time.time()`` on this one machine.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
import httpx
import orjson

from app.delivery import CONNECT_TIMEOUT, USER_AGENT
from app.netguard import NetPolicy, make_transport
from baton.signing import Signer, generate_secret
from bench.peers.peer_common import percentile

#: Workflow statuses after which nothing more happens (DESIGN §5).
TERMINAL = frozenset({"completed", "failed", "cancelled", "compensated", "compensation_failed"})
#: How often completion is polled (on the cheap list endpoint).
POLL_INTERVAL = 0.05
#: How many times W2 and W4 read their workflow's graph once it is done.
GRAPH_READS = 10


@dataclass(frozen=True)
class Sizes:
    """How big each workload is; ``quick`` shrinks them for fast iterations."""

    w1_workflows: int = 500
    w1_concurrency: int = 64
    w2_parallel: int = 1000
    w3_chain: int = 100
    w4_parallel: int = 10_000
    raw_requests: int = 3000
    raw_seconds: float = 20.0
    j1_jobs: int = 10_000
    j1_batch: int = 500

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            w1_workflows=100,
            w2_parallel=200,
            w3_chain=30,
            w4_parallel=2000,
            raw_requests=1000,
            raw_seconds=10.0,
            j1_jobs=2000,
        )


@dataclass
class Outcome:
    """What one workload measured; ``status`` is ok, timeout or error."""

    name: str
    status: str = "ok"
    error: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "error": self.error,
            "seconds": round(self.seconds, 3),
            "metrics": self.metrics,
        }

    def brief(self) -> str:
        """One line for the progress log: the error, or the workload's headline figure."""
        m = self.metrics
        if self.error:
            return self.error.splitlines()[0][:160]
        if self.name == "RAW":
            return ", ".join(f"{k} {v['rps']:.0f}/s" for k, v in m.items())
        if self.name in ("W1", "W1B"):
            return f"{m.get('steps_per_second', math.nan):.0f} steps/s"
        if self.name == "W3":
            return f"hop mean {m.get('hop_mean_ms', math.nan):.2f} ms"
        if self.name == "J1":
            return (
                f"{m.get('jobs_per_second', math.nan):.0f} jobs/s, claim -> complete "
                f"p50 {m.get('latency_p50_ms', math.nan):.1f} ms"
            )
        return f"wall {m.get('wall_seconds', math.nan):.2f} s"


async def run_bounded(
    outcome: Outcome, body: Callable[[Outcome], Awaitable[None]], limit: float
) -> Outcome:
    """Run ``body(outcome)`` for at most ``limit`` seconds; a timeout or error is recorded."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(limit):
            await body(outcome)
    except TimeoutError:
        outcome.status = "timeout"
        outcome.error = f"did not finish within {limit:g} s"
    except Exception as exc:  # a failed workload must not end the run
        outcome.status = "error"
        outcome.error = f"{type(exc).__name__}: {exc}"[:500]
    finally:
        outcome.seconds = time.perf_counter() - started
    return outcome


def parse_time(value: str) -> float:
    """An ISO 8601 time from the API as a Unix timestamp."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


# --------------------------------------------------------------------------- clients


class BatonApi:
    """A pooled client for Baton's REST API (plain aiohttp: cheap on the client side)."""

    def __init__(self, base_url: str, api_key: str, *, limit: int = 64) -> None:
        self.base_url = base_url.rstrip("/")
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=limit),
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=aiohttp.ClientTimeout(total=120),
        )

    async def aclose(self) -> None:
        await self._session.close()

    async def create(self, document: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        data = orjson.dumps(document)
        async with self._session.post(
            f"{self.base_url}/v1/workflows",
            data=data,
            headers={"Content-Type": "application/json"},
        ) as response:
            body = await response.read()
            if response.status not in (200, 201):
                raise RuntimeError(f"create answered {response.status}: {body[:300]!r}")
            return response.status, orjson.loads(body)

    async def create_batch(self, documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``POST /v1/workflows/batch``: the documents of the workflows, in order."""
        async with self._session.post(
            f"{self.base_url}/v1/workflows/batch",
            data=orjson.dumps({"workflows": documents}),
            headers={"Content-Type": "application/json"},
        ) as response:
            body = await response.read()
            if response.status not in (200, 201):
                raise RuntimeError(f"batch create answered {response.status}: {body[:300]!r}")
            items: list[dict[str, Any]] = orjson.loads(body)["items"]
            return items

    async def graph(self, workflow_id: str) -> bytes:
        """``GET /v1/workflows/{id}/graph``, as the bytes of the answer."""
        async with self._session.get(f"{self.base_url}/v1/workflows/{workflow_id}/graph") as r:
            body = await r.read()
            if r.status != 200:
                raise RuntimeError(f"graph answered {r.status}: {body[:300]!r}")
            return body

    async def list_page(self, **params: str | int) -> dict[str, Any]:
        query = {k: str(v) for k, v in params.items()}
        async with self._session.get(f"{self.base_url}/v1/workflows", params=query) as response:
            body = await response.read()
            if response.status != 200:
                raise RuntimeError(f"list answered {response.status}: {body[:300]!r}")
            result: dict[str, Any] = orjson.loads(body)
            return result

    async def list_all(self, **params: str | int) -> list[dict[str, Any]]:
        """Every summary matching ``params``, following cursors."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            page = await self.list_page(
                limit=500, **params, **({"cursor": cursor} if cursor else {})
            )
            items.extend(page["items"])
            cursor = page.get("nextCursor")
            if not cursor:
                return items

    async def wait_for(self, name: str) -> dict[str, Any]:
        """Poll until the newest workflow called ``name`` is finished; return its summary."""
        while True:
            page = await self.list_page(name=name, limit=1)
            if page["items"] and page["items"][0]["status"] in TERMINAL:
                summary: dict[str, Any] = page["items"][0]
                return summary
            await asyncio.sleep(POLL_INTERVAL)

    async def wait_all(self, name: str) -> None:
        """Poll until no workflow called ``name`` is pending or running."""
        while True:
            running = await self.list_page(name=name, status="running", limit=1)
            if not running["items"]:
                pending = await self.list_page(name=name, status="pending", limit=1)
                if not pending["items"]:
                    return
            await asyncio.sleep(POLL_INTERVAL)


class Handler:
    """Talks to bench/handler.py: reset its records, read them back."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.step_url = f"{self.base_url}/step"

    async def reset(self) -> None:
        async with httpx.AsyncClient() as client:
            (await client.post(f"{self.base_url}/reset")).raise_for_status()

    async def stats(self) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=60) as client:
            response = await client.get(f"{self.base_url}/stats")
            response.raise_for_status()
            result: dict[str, Any] = orjson.loads(response.content)
            return result


def step(step_id: str, url: str, depends_on: list[str] | None = None) -> dict[str, Any]:
    document: dict[str, Any] = {"id": step_id, "url": url}
    if depends_on:
        document["dependsOn"] = depends_on
    return document


# --------------------------------------------------------------------------- RAW


def raw_body() -> bytes:
    """A step-like JSON body of about 1 KB."""
    body: dict[str, Any] = {
        "workflowId": "wf_bench",
        "workflowName": "raw",
        "stepId": "raw",
        "attempt": 1,
        "kind": "step",
        "context": {"pad": ""},
        "previousSteps": {},
        "deadline": "2030-01-01T00:00:00.000Z",
        "callbackUrl": "http://127.0.0.1:8000/v1/callbacks/token",
    }
    body["context"]["pad"] = "x" * (1024 - len(orjson.dumps(body)))
    return orjson.dumps(body)


async def _hammer(
    send: Callable[[], Awaitable[None]], concurrency: int, requests: int, seconds: float
) -> dict[str, Any]:
    """Send ``requests`` requests ``concurrency`` at a time (stopping after ``seconds``)."""
    latencies: list[float] = []
    issued = 0
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal issued
        while issued < requests and time.perf_counter() < stop_at:
            issued += 1
            began = time.perf_counter()
            await send()
            latencies.append(time.perf_counter() - began)

    for _ in range(min(100, requests)):  # warm-up: connections opened, code paths hot
        await send()
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "seconds": round(elapsed, 3),
        "rps": len(latencies) / elapsed if elapsed > 0 else math.nan,
        "mean_ms": 1000 * sum(latencies) / len(latencies) if latencies else math.nan,
        "p50_ms": 1000 * percentile(latencies, 50),
        "p99_ms": 1000 * percentile(latencies, 99),
    }


async def raw_baton_stack(
    url: str, concurrency: int, requests: int, seconds: float
) -> dict[str, Any]:
    """POST to the handler the way app/delivery.py does: same transport, client, signing."""
    signer = Signer(generate_secret())
    body = raw_body()
    client = httpx.AsyncClient(
        transport=make_transport(NetPolicy(allow_private=True), limit=64),
        follow_redirects=False,
        timeout=httpx.Timeout(None, connect=CONNECT_TIMEOUT),
        headers={"User-Agent": USER_AGENT},
    )
    counter = 0

    async def send() -> None:
        nonlocal counter
        counter += 1
        headers = signer.headers(f"msg_raw{counter}", int(time.time()), body)
        headers.update(
            {
                "Content-Type": "application/json",
                "Baton-Workflow-Id": "wf_bench",
                "Baton-Attempt": "1",
                "Baton-Kind": "step",
                "Baton-Step-Id": "raw",
            }
        )
        async with client.stream("POST", url, content=body, headers=headers) as response:
            async for _ in response.aiter_bytes():
                pass
            if response.status_code != 200:
                raise RuntimeError(f"handler answered {response.status_code}")

    try:
        return await _hammer(send, concurrency, requests, seconds)
    finally:
        await client.aclose()


async def raw_aiohttp(url: str, concurrency: int, requests: int, seconds: float) -> dict[str, Any]:
    """POST to the handler with plain aiohttp (the ceiling of a Python client here)."""
    body = raw_body()
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=64),
        headers={"Content-Type": "application/json"},
    )

    async def send() -> None:
        async with session.post(url, data=body) as response:
            await response.read()
            if response.status != 200:
                raise RuntimeError(f"handler answered {response.status}")

    try:
        return await _hammer(send, concurrency, requests, seconds)
    finally:
        await session.close()


async def raw(out: Outcome, handler: Handler, sizes: Sizes) -> None:
    """RAW: Baton's client stack at concurrency 64 and 1, plain aiohttp at 16."""
    n, limit = sizes.raw_requests, sizes.raw_seconds
    out.metrics["c64"] = await raw_baton_stack(handler.step_url, 64, n, limit)
    out.metrics["c1"] = await raw_baton_stack(handler.step_url, 1, n, limit)
    out.metrics["aiohttp_c16"] = await raw_aiohttp(handler.step_url, 16, n, limit)
    await handler.reset()


# --------------------------------------------------------------------------- W1–W4


def diamond(workflow_id: str, name: str, url: str) -> dict[str, Any]:
    """W1's workflow: start -> a, b -> merge."""
    return {
        "id": workflow_id,
        "name": name,
        "steps": [
            step("start", url),
            step("a", url, ["start"]),
            step("b", url, ["start"]),
            step("merge", url, ["a", "b"]),
        ],
    }


async def w1(out: Outcome, api: BatonApi, handler: Handler, sizes: Sizes) -> None:
    """W1: many diamond workflows (start -> a, b -> merge) submitted at once."""
    n = sizes.w1_workflows
    name = "bench-w1-diamond"
    out.metrics.update(workflows=n, steps=4 * n, concurrency=sizes.w1_concurrency)
    sent: dict[str, float] = {}
    semaphore = asyncio.Semaphore(sizes.w1_concurrency)

    async def submit(i: int) -> None:
        workflow_id = f"w1-{i:05d}"
        async with semaphore:
            sent[workflow_id] = time.time()
            await api.create(diamond(workflow_id, name, handler.step_url))

    first = time.time()
    await asyncio.gather(*(submit(i) for i in range(n)))
    out.metrics["submit_seconds"] = time.time() - first
    await _diamonds_done(out, api, handler, name, n, first, sent)


async def w1b(out: Outcome, api: BatonApi, handler: Handler, sizes: Sizes) -> None:
    """W1B: W1's diamonds submitted as one batch (``POST /v1/workflows/batch``)."""
    n = sizes.w1_workflows
    name = "bench-w1b-batch"
    out.metrics.update(workflows=n, steps=4 * n, concurrency=1)
    documents = [diamond(f"w1b-{i:05d}", name, handler.step_url) for i in range(n)]
    out.metrics["body_bytes"] = len(orjson.dumps({"workflows": documents}))
    first = time.time()
    created = await api.create_batch(documents)
    out.metrics["submit_seconds"] = time.time() - first
    if [d["id"] for d in created] != [d["id"] for d in documents]:
        raise RuntimeError("the batch did not answer in request order")
    await _diamonds_done(out, api, handler, name, n, first, dict.fromkeys(_ids(documents), first))


def _ids(documents: list[dict[str, Any]]) -> list[str]:
    return [str(d["id"]) for d in documents]


async def _diamonds_done(
    out: Outcome,
    api: BatonApi,
    handler: Handler,
    name: str,
    n: int,
    first: float,
    sent: dict[str, float],
) -> None:
    """Wait for W1's (or W1B's) workflows; steps/s and latencies from their ``completedAt``."""
    await api.wait_all(name)
    out.metrics["detected_seconds"] = time.time() - first
    done = await api.list_all(name=name)
    completed = [w for w in done if w["status"] == "completed" and w["completedAt"]]
    out.metrics["completed"] = len(completed)
    out.metrics["not_completed"] = n - len(completed)
    if not completed:
        raise RuntimeError("no workflow completed")
    finished = {w["id"]: parse_time(w["completedAt"]) for w in completed}
    last = max(finished.values())
    wall = last - first
    latencies = [finished[i] - sent[i] for i in finished if i in sent]
    out.metrics.update(
        wall_seconds=wall,
        steps_per_second=4 * len(completed) / wall,
        latency_p50_s=percentile(latencies, 50),
        latency_p99_s=percentile(latencies, 99),
        latency_max_s=max(latencies),
    )
    out.metrics["handler_requests"] = (await handler.stats())["count"]
    if len(completed) < n:
        raise RuntimeError(f"{n - len(completed)} of {n} workflows did not complete")


async def _fan_out(
    out: Outcome, api: BatonApi, handler: Handler, parallel: int, name: str, with_ends: bool
) -> None:
    """One workflow of ``parallel`` independent steps (between prepare and finalize)."""
    url = handler.step_url
    middle = [f"p{i:05d}" for i in range(parallel)]
    if with_ends:
        steps = [step("prepare", url)]
        steps += [step(s, url, ["prepare"]) for s in middle]
        steps.append(step("finalize", url, middle))
    else:
        steps = [step(s, url) for s in middle]
    out.metrics["steps"] = len(steps)
    document = {"name": name, "steps": steps}
    out.metrics["body_bytes"] = len(orjson.dumps(document))
    sent = time.time()
    clock = time.perf_counter()
    await api.create(document)
    out.metrics["accept_seconds"] = time.perf_counter() - clock
    summary = await api.wait_for(name)
    out.metrics["detected_seconds"] = time.time() - sent
    out.metrics["status"] = summary["status"]
    if summary["status"] != "completed":
        raise RuntimeError(f"workflow ended {summary['status']}: {summary.get('error')}")
    wall = parse_time(summary["completedAt"]) - sent
    out.metrics.update(wall_seconds=wall, per_step_ms=1000 * wall / len(steps))
    out.metrics["handler_requests"] = (await handler.stats())["count"]
    # The whole DAG in one answer (GET …/graph), read a few times once it is done.
    times = []
    for _ in range(GRAPH_READS):
        clock = time.perf_counter()
        body = await api.graph(summary["id"])
        times.append(time.perf_counter() - clock)
    out.metrics.update(
        graph_p50_ms=1000 * percentile(times, 50),
        graph_max_ms=1000 * max(times),
        graph_bytes=len(body),
    )


async def w2(out: Outcome, api: BatonApi, handler: Handler, sizes: Sizes) -> None:
    """W2: prepare -> N parallel -> finalize, one workflow."""
    await _fan_out(out, api, handler, sizes.w2_parallel, "bench-w2-fanout", with_ends=True)


async def w4(out: Outcome, api: BatonApi, handler: Handler, sizes: Sizes) -> None:
    """W4: one workflow of N parallel steps."""
    await _fan_out(out, api, handler, sizes.w4_parallel, "bench-w4-wide", with_ends=False)


async def w3(out: Outcome, api: BatonApi, handler: Handler, sizes: Sizes) -> None:
    """W3: a chain of N steps; the hop is handler answer of step n -> arrival of step n+1."""
    url = handler.step_url
    n = sizes.w3_chain
    ids = chain_ids(n)
    steps = [step(ids[0], url)] + [step(ids[i], url, [ids[i - 1]]) for i in range(1, n)]
    out.metrics["steps"] = n
    await handler.reset()
    sent = time.time()
    await api.create({"name": "bench-w3-chain", "steps": steps})
    summary = await api.wait_for("bench-w3-chain")
    if summary["status"] != "completed":
        raise RuntimeError(f"workflow ended {summary['status']}: {summary.get('error')}")
    out.metrics["wall_seconds"] = parse_time(summary["completedAt"]) - sent
    out.metrics.update(await chain_hops(handler, chain_ids(n), sent))


def chain_ids(n: int) -> list[str]:
    """The step ids of W3's chain, in order (every system's W3 uses them)."""
    return [f"c{i:04d}" for i in range(n)]


async def chain_hops(handler: Handler, ids: list[str], sent: float) -> dict[str, Any]:
    """W3's hops from the handler's records: arrival of step n+1 - its answer to step n.

    ``sent`` is when the chain was submitted; the first hop is from then to the
    arrival of the first step.
    """
    first: dict[str, tuple[float, float]] = {}
    for step_id, arrived, answered in (await handler.stats())["records"]:
        first.setdefault(step_id, (arrived, answered))
    hops = [
        first[ids[i + 1]][0] - first[ids[i]][1]
        for i in range(len(ids) - 1)
        if ids[i] in first and ids[i + 1] in first
    ]
    if not hops:
        raise RuntimeError("the handler saw no consecutive steps")
    return {
        "hops": len(hops),
        "hop_mean_ms": 1000 * sum(hops) / len(hops),
        "hop_p50_ms": 1000 * percentile(hops, 50),
        "hop_p99_ms": 1000 * percentile(hops, 99),
        "hop_max_ms": 1000 * max(hops),
        "first_hop_ms": 1000 * (first[ids[0]][0] - sent) if ids[0] in first else math.nan,
    }
