"""`when` conditions built to hurt: the server keeps its memory, its event loop and its work.

- A 900 KB create whose context holds a 300 KB string and 3,000 strings, with
  ``size(context.l.map(x, context.s + context.s)) > 0``: 1.8 GB if evaluated in
  full (it took the server to 1.97 GB and blocked ``/healthz`` for 4.2 s). Here
  at the root and after a step, where a settle decides it.
- 10,000 steps, each with a `when` over a 25,000-element list (16 s of
  ``/healthz`` blocked when evaluated on the event loop, one by one).
- A condition that runs for many seconds inside the iteration budget.

``/healthz`` is probed all along from another thread and must answer fast
against a baseline measured first; the server's peak memory (``VmHWM`` of
``/proc/<pid>/status``) must stay far below what the bombs would take. Each
bomb fails its step with ``condition_error``, and the server serves an ordinary
workflow afterwards.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import orjson
import pytest
from harness import BatonClient, BatonFactory, BatonServer, HandlerClient, peak_memory_kib

MEMORY_BOMB = "size(context.l.map(x, context.s + context.s)) > 0"
#: 9,000 searches through 200 KB: seconds of work within the iteration budget.
TIME_BOMB = 'context.t.all(x, context.u.contains("abc") == false)'
#: More iterations than the budget allows: an evaluation error, the same for every step.
LONG_LIST = "context.big.exists(x,x<0)"
#: Where the 10,000 steps would go: nothing listens there (short, to keep the body small).
NOWHERE = "http://127.0.0.1:9/s"


class Probe:
    """``GET /healthz`` again and again from a thread; when each was sent, how long it took."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.probes: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60, trust_env=False) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                assert client.get("/healthz").status_code == 200
                self.probes.append((started, time.perf_counter() - started))
                time.sleep(0.01)

    @property
    def durations(self) -> list[float]:
        return [duration for _, duration in self.probes]

    def slowest(self, since: float, until: float) -> float:
        """The longest answer to a probe sent between ``since`` and ``until``."""
        return max(d for started, d in self.probes if since <= started <= until)

    @contextmanager
    def running(self) -> Iterator[Probe]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()


def memory_bomb_context() -> dict[str, Any]:
    return {"s": "x" * 300_000, "l": [f"{i:0190d}" for i in range(3_000)]}


def steps_by_id(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in document["steps"]}


def condition_errors(document: dict[str, Any]) -> list[str]:
    return [
        s["error"]["message"]
        for s in document["steps"]
        if s["status"] == "failed" and s["error"]["code"] == "condition_error"
    ]


def baseline_healthz(server: BatonServer) -> float:
    with httpx.Client(base_url=server.url, timeout=10, trust_env=False) as client:
        durations = []
        for _ in range(30):
            started = time.perf_counter()
            client.get("/healthz")
            durations.append(time.perf_counter() - started)
    return statistics.median(durations)


@pytest.mark.slow
def test_condition_bombs_fail_their_steps_and_spare_the_server(
    baton_factory: BatonFactory, handler: HandlerClient
) -> None:
    server = baton_factory.create()
    assert server.pid is not None
    handler.script(gate=[{"delay": 60}])
    with server.client(timeout=120) as api:
        # Warm up (the condition worker starts on first use), then measure.
        api.create(
            {"id": "warm", "steps": [{"id": "a", "url": handler.step_url("a"), "when": "true"}]}
        )
        api.wait_status("warm", "completed")
        usual = baseline_healthz(server)
        memory_before = peak_memory_kib(server.pid)

        with Probe(server.url).running() as probe:
            bombs_started = time.perf_counter()
            # 1. The memory bomb at the root, in a 900 KB create.
            root = {
                "id": "root-bomb",
                "context": memory_bomb_context(),
                "steps": [{"id": "bomb", "url": handler.step_url("bomb"), "when": MEMORY_BOMB}],
            }
            assert 850_000 < len(orjson.dumps(root)) < 1_000_000
            document = api.create(root)
            assert document["status"] == "failed"
            [message] = condition_errors(document)
            assert "memory budget" in message

            # 2. The same bomb after a step: decided while its settle runs.
            after = {
                "id": "later-bomb",
                "context": memory_bomb_context(),
                "steps": [
                    {"id": "first", "url": handler.step_url("first")},
                    {
                        "id": "bomb",
                        "url": handler.step_url("bomb"),
                        "dependsOn": ["first"],
                        "when": MEMORY_BOMB + " && steps.first.status == 'completed'",
                    },
                ],
            }
            api.create(after)
            document = api.wait_status("later-bomb", "failed", timeout=60)
            [message] = condition_errors(document)
            assert "memory budget" in message

            # 3. A condition that would run for many seconds.
            slow = {
                "id": "slow-bomb",
                "context": {"u": "ab" * 100_000, "t": list(range(9_000))},
                "steps": [{"id": "slow", "url": handler.step_url("slow"), "when": TIME_BOMB}],
            }
            started = time.perf_counter()
            document = api.create(slow)
            assert time.perf_counter() - started < 10
            [message] = condition_errors(document)
            assert "time budget" in message
            bombs_ended = time.perf_counter()

            # 4. 10,000 steps over a 25,000-element list: one evaluation for all. Any
            # 10,000-step create keeps the event loop a while (parsing, storing): the
            # same create without conditions, its steps waiting behind a first one
            # that does not answer, is the measure.
            steps = [{"id": f"s{i}", "url": NOWHERE} for i in range(10_000)]
            plain = {
                "id": "plain",
                "context": {"big": list(range(25_000))},
                "steps": [
                    {"id": "gate", "url": handler.step_url("gate")},
                    *({**step, "dependsOn": ["gate"]} for step in steps[1:]),
                ],
            }
            many = {
                "id": "many",
                "failFast": False,
                "context": {"big": list(range(25_000))},
                "steps": [{**step, "when": LONG_LIST} for step in steps],
            }
            assert len(orjson.dumps(many)) < 1_000_000
            plain_started = time.perf_counter()
            api.create(plain)
            many_started = time.perf_counter()
            document = api.create(many)
            many_ended = time.perf_counter()
            assert document["status"] == "failed"
            messages = condition_errors(document)
            assert len(messages) == 10_000
            assert "iterations" in messages[0]

        memory_after = peak_memory_kib(server.pid)
        # Nothing was sent for a step whose condition failed.
        assert not handler.requests("bomb") and not handler.requests("slow")

        # The server keeps serving.
        api.http.post("/v1/workflows/plain/cancel").raise_for_status()
        api.create({"id": "after", "steps": [{"id": "a", "url": handler.step_url("after")}]})
        api.wait_status("after", "completed")

    during_bombs = probe.slowest(bombs_started, bombs_ended)
    during_plain = probe.slowest(plain_started, many_started)
    during_many = probe.slowest(many_started, many_ended)
    summary = (
        f"/healthz {usual * 1000:.1f} ms usually, slowest {during_bombs * 1000:.0f} ms "
        f"during the bombs, {during_plain * 1000:.0f} ms during a plain 10,000-step create, "
        f"{during_many * 1000:.0f} ms during the conditional one "
        f"({many_ended - many_started:.1f} s); "
        f"peak memory {memory_before // 1024} MiB before, {memory_after // 1024} MiB after"
    )
    print(summary)
    # The event loop never waits for a condition.
    assert statistics.median(probe.durations) < 10 * usual + 0.02, summary
    assert during_bombs < 20 * usual + 0.25, summary
    assert during_many < 2 * during_plain + 0.25, summary
    # 1.8 GB would be what the memory bomb builds; the server itself grew far less.
    assert memory_after - memory_before < 200 * 1024, summary


def test_an_ordinary_condition_runs_and_skips_as_before(
    api: BatonClient, handler: HandlerClient
) -> None:
    body = {
        "id": f"ordinary-{time.monotonic_ns()}",
        "context": {"total": 42},
        "steps": [
            {"id": "a", "url": handler.step_url("a"), "when": "context.total > 0"},
            {"id": "b", "url": handler.step_url("b"), "when": "context.total > 100"},
            {
                "id": "c",
                "url": handler.step_url("c"),
                "dependsOn": ["a", "b"],
                "when": "steps.a.status == 'completed' && steps.b.status == 'skipped'",
            },
        ],
    }
    document = api.create(body)
    document = api.wait_status(document["id"], "completed")
    assert {s["id"]: s["status"] for s in document["steps"]} == {
        "a": "completed",
        "b": "skipped",
        "c": "completed",
    }
