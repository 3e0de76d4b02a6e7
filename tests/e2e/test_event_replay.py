"""Replaying a long history to many clients is cheap and fair.

A workflow of 10,000 steps records 20,003 events. Fifty clients ask for its
event stream and never read: the kernel's socket buffers take most of a replay,
so the server does the whole work fifty times. It must do it at the cost of
fifty replays (CPU time read from ``/proc/<pid>/stat``, against one replay
measured first), and the other clients' requests must stay about as fast as
they were before (against a baseline timed in the same test).
"""

from __future__ import annotations

import socket
import statistics
import time
from collections.abc import Iterator

import httpx
import pytest
from harness import BatonClient, BatonFactory, HandlerClient, cpu_seconds

STEPS = 10_000
CLIENTS = 50


def wait_idle(pid: int, *, quiet: float = 1.0, timeout: float = 120.0) -> float:
    """Wait until the process spends (almost) no CPU for ``quiet`` seconds; its CPU then."""
    deadline = time.monotonic() + timeout
    before = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = cpu_seconds(pid)
        if now - before < 0.05 * quiet:
            return now
        before = now
    raise AssertionError(f"process {pid} still busy after {timeout} s")


def timed_reads(api: BatonClient, workflow_id: str, count: int) -> list[float]:
    """Seconds each of ``count`` reads of a small workflow took, one after the other."""
    durations = []
    for _ in range(count):
        started = time.perf_counter()
        api.get(workflow_id)
        durations.append(time.perf_counter() - started)
    return durations


def replay(api: BatonClient, workflow_id: str) -> int:
    """Read the whole event stream of a finished workflow; the number of events."""
    events = 0
    with api.http.stream(
        "GET",
        f"/v1/workflows/{workflow_id}/events",
        headers={"Accept": "text/event-stream"},
        timeout=120,
    ) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            events += line.startswith("id: ")
    return events


def silent_clients(url: str, key: str, workflow_id: str, count: int) -> Iterator[socket.socket]:
    """``count`` connections that ask for the event stream and never read a byte."""
    host, port = httpx.URL(url).host, httpx.URL(url).port
    request = (
        f"GET /v1/workflows/{workflow_id}/events HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {key}\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()
    for _ in range(count):
        connection = socket.create_connection((host, port))
        connection.sendall(request)
        yield connection


@pytest.mark.slow
def test_fifty_silent_replays_cost_fifty_replays_and_slow_nobody(
    baton_factory: BatonFactory, handler: HandlerClient
) -> None:
    server = baton_factory.create()
    assert server.pid is not None
    with server.client(timeout=120) as api:
        big = api.create(
            {
                "id": "big",
                "steps": [{"id": f"s{i}", "url": handler.step_url("s")} for i in range(STEPS)],
            }
        )
        api.create({"id": "small", "steps": [{"id": "a", "url": handler.step_url("a")}]})
        api.wait_status(big["id"], "completed", timeout=180)
        api.wait_status("small", "completed")
        expected = 2 * STEPS + 3

        wait_idle(server.pid)
        baseline = timed_reads(api, "small", 40)
        before = cpu_seconds(server.pid)
        assert replay(api, "big") == expected
        one_replay = wait_idle(server.pid) - before

        before = cpu_seconds(server.pid)
        clients = list(silent_clients(server.url, server.api_key, "big", CLIENTS))
        try:
            loaded = timed_reads(api, "small", 40)
            fifty_replays = wait_idle(server.pid) - before
        finally:
            for connection in clients:
                connection.close()

    usual, during = statistics.median(baseline), statistics.median(loaded)
    summary = (
        f"one replay {one_replay:.2f} s CPU, {CLIENTS} silent replays {fifty_replays:.2f} s; "
        f"reads {usual * 1000:.1f} ms before, {during * 1000:.1f} ms during "
        f"(slowest {max(loaded) * 1000:.0f} ms)"
    )
    print(summary)
    # The work grows with the replays and no faster (with room for timing noise).
    assert fifty_replays <= 1.5 * CLIENTS * one_replay + 2.0, summary
    # Other requests go between two pages of replay, not behind all of them.
    assert during <= 5 * usual + 0.05, summary
    assert max(loaded) <= 20 * usual + 0.5, summary
