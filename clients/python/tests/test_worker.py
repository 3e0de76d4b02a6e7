"""The worker against a test double of the §7 queue served by uvicorn on loopback.

``FakeQueueServer`` (fake_queue_server.py) implements claim with long poll and leases,
complete, fail and heartbeat as the contract says; these tests check what the worker
does with it: bounded concurrency (threads and tasks), heartbeats that keep a long job's
lease, failures with the handler's message, ``Retry`` and ``Fatal``, and a graceful stop
(in a thread, and on SIGTERM in a real process that must exit 0).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_queue_server import API_KEY, FakeJob, FakeQueueServer

from baton import AsyncClient, Client, Fatal, Retry, Worker
from baton.worker import lease_seconds, outcome_of

TESTS = Path(__file__).resolve().parent
DEADLINE = 20.0


@pytest.fixture
def fake() -> Iterator[FakeQueueServer]:
    with FakeQueueServer() as server:
        yield server


@pytest.fixture
def client(fake: FakeQueueServer) -> Iterator[Client]:
    with Client(fake.url, api_key=API_KEY) as client:
        yield client


def until(condition: Callable[[], Any], timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def settled(*jobs: FakeJob) -> Callable[[], bool]:
    return lambda: all(job.status in ("completed", "dlq") for job in jobs)


class Gauge:
    """Counts handlers running at once (from threads or tasks)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0

    def __enter__(self) -> None:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def __exit__(self, *exc_info: object) -> None:
        with self.lock:
            self.now -= 1


def run_in_thread(worker: Worker) -> threading.Thread:
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    return thread


def test_sync_handlers_run_in_threads_at_most_concurrency_at_once(
    fake: FakeQueueServer, client: Client
) -> None:
    jobs = [fake.state.add("etl", {"n": n}) for n in range(9)]
    gauge = Gauge()
    threads: set[int] = set()

    def handler(job: Any) -> dict[str, Any]:
        with gauge:
            threads.add(threading.get_ident())
            time.sleep(0.15)
        return {"double": job.payload["n"] * 2}

    worker = Worker(client, "etl", handler, concurrency=3, wait=0.5)
    thread = run_in_thread(worker)
    until(settled(*jobs))
    worker.stop()
    thread.join(DEADLINE)
    assert not thread.is_alive()
    assert gauge.most == 3, "three at once, never more"
    assert len(threads) == 3 and threading.get_ident() not in threads
    assert [job.result for job in jobs] == [{"double": n * 2} for n in range(9)]
    assert all(job.status == "completed" and job.attempts == 1 for job in jobs)
    claims = fake.state.calls("claim")
    assert all(body["limit"] <= 3 and body["workerId"] == worker.worker_id for *_, body in claims)


async def test_async_handlers_run_as_tasks_with_an_async_client(fake: FakeQueueServer) -> None:
    jobs = [fake.state.add("etl", {"n": n}) for n in range(8)]
    gauge = Gauge()

    async def handler(job: Any) -> int:
        with gauge:
            await asyncio.sleep(0.15)
        return int(job.payload["n"])

    async with AsyncClient(fake.url, api_key=API_KEY) as client:
        worker = Worker(client, "etl", handler, concurrency=4, wait=0.5)
        running = asyncio.create_task(worker.arun())
        while not settled(*jobs)():  # noqa: ASYNC110 (the fake's state, set in its thread)
            await asyncio.sleep(0.02)
        worker.stop()
        await asyncio.wait_for(running, DEADLINE)
    assert gauge.most == 4
    assert [job.result for job in jobs] == list(range(8))


def test_heartbeats_keep_a_long_job_s_lease(fake: FakeQueueServer, client: Client) -> None:
    job = fake.state.add("etl", {}, visibility_timeout=0.9)

    def handler(job: Any) -> str:
        time.sleep(2.7)  # three leases
        return "done"

    worker = Worker(client, "etl", handler, wait=0.2)
    thread = run_in_thread(worker)
    until(settled(job))
    worker.stop()
    thread.join(DEADLINE)
    assert (job.status, job.result, job.attempts) == ("completed", "done", 1), "never re-claimed"
    beats = fake.state.calls("heartbeat")
    assert all(body == {"leaseId": body["leaseId"], "visibility": 0.9} for *_, body in beats)
    # One every third of the lease (0.3 s); a loaded machine may stretch a few.
    assert len(beats) >= 4
    gaps = [later[0] - earlier[0] for earlier, later in itertools.pairwise(beats)]
    assert 0.25 < statistics.median(gaps) < 0.5, gaps


def test_failures_are_reported_with_the_handler_s_message(
    fake: FakeQueueServer, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    raising = fake.state.add("etl", {"kind": "raise"}, max_retries=1)
    retrying = fake.state.add("etl", {"kind": "retry"}, max_retries=5)
    fatal = fake.state.add("etl", {"kind": "fatal"}, max_retries=5)

    def handler(job: Any) -> str:
        kind = job.payload["kind"]
        if kind == "raise":
            raise ValueError(f"bad row {job.attempt}")
        if kind == "retry" and job.attempt == 1:
            raise Retry("rate limited", after=0.3)
        if kind == "fatal":
            raise Fatal("no such customer")
        return "ok"

    worker = Worker(client, "etl", handler, concurrency=3, wait=0.2)
    with caplog.at_level(logging.INFO, logger="baton.worker"):
        thread = run_in_thread(worker)
        until(settled(raising, retrying, fatal))
        worker.stop()
        thread.join(DEADLINE)

    fails = {job_id: [] for job_id in (raising.id, retrying.id, fatal.id)}
    for _, job_id, body in fake.state.calls("fail"):
        fails[job_id].append({k: v for k, v in body.items() if k != "leaseId"})
    assert fails[raising.id] == [
        {"reason": "ValueError: bad row 1", "retry": True},
        {"reason": "ValueError: bad row 2", "retry": True},
    ]
    assert raising.status == "dlq", "retries ran out"
    assert fails[retrying.id] == [{"reason": "rate limited", "retry": True, "retryAfter": 0.3}]
    assert (retrying.status, retrying.result, retrying.attempts) == ("completed", "ok", 2)
    assert fails[fatal.id] == [{"reason": "no such customer", "retry": False}]
    assert (fatal.status, fatal.attempts) == ("dlq", 1)

    events = [getattr(record, "event", None) for record in caplog.records]
    assert {
        "worker.started",
        "worker.job_started",
        "worker.job_failed",
        "worker.job_completed",
        "worker.stopped",
    } <= set(events)
    failed = [
        r
        for r in caplog.records
        if getattr(r, "job_id", None) == raising.id and r.event == "worker.job_failed"
    ]
    assert failed and failed[0].queue == "etl" and failed[0].exc_info is not None


def test_a_lost_lease_is_logged_and_not_fatal(
    fake: FakeQueueServer, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    job = fake.state.add("etl", {}, visibility_timeout=0.6)

    def handler(claimed: Any) -> str:
        # Someone else took the job meanwhile (a cancel, or an expired lease re-claimed).
        with fake.state.lock:
            job.lease_id = "stolen"
        time.sleep(0.5)
        return "late"

    worker = Worker(client, "etl", handler, wait=0.2)
    with caplog.at_level(logging.INFO, logger="baton.worker"):
        thread = run_in_thread(worker)
        until(lambda: len(fake.state.calls("complete")) == 1)
        worker.stop()
        thread.join(DEADLINE)
    events = [getattr(record, "event", None) for record in caplog.records]
    assert "worker.lease_lost" in events
    assert "worker.report_failed" in events
    assert job.status == "claimed", "the 409 changed nothing"


def test_stop_finishes_held_jobs_and_claims_no_more(fake: FakeQueueServer, client: Client) -> None:
    first = fake.state.add("etl", {})
    started = threading.Event()

    def handler(job: Any) -> str:
        started.set()
        time.sleep(0.6)
        return "finished"

    # One slot, held: the worker waits for it to free up and has no claim in flight.
    worker = Worker(client, "etl", handler, concurrency=1, wait=0.3)
    thread = run_in_thread(worker)
    assert started.wait(DEADLINE)
    worker.stop()
    later = fake.state.add("etl", {})
    thread.join(DEADLINE)
    assert not thread.is_alive()
    assert (first.status, first.result) == ("completed", "finished")
    assert later.status == "pending", "nothing claimed after stop"
    assert len(fake.state.calls("claim")) == 1


def test_a_claim_in_flight_at_stop_is_finished_and_its_jobs_run(
    fake: FakeQueueServer, client: Client
) -> None:
    claimed = threading.Event()

    def handler(job: Any) -> str:
        claimed.set()
        return "ran"

    worker = Worker(client, "etl", handler, concurrency=1, wait=2)
    thread = run_in_thread(worker)
    until(lambda: worker._loop is not None)
    time.sleep(0.3)  # the first long poll is waiting
    worker.stop()
    job = fake.state.add("etl", {})
    thread.join(DEADLINE)
    # Jobs a claim leased are never left to expire (that would cost them an attempt).
    assert claimed.is_set()
    assert (job.status, job.result) == ("completed", "ran")


def test_sigterm_mid_job_finishes_it_and_exits_0(fake: FakeQueueServer) -> None:
    job = fake.state.add("etl", {"sleep": 1.5})
    process = subprocess.Popen(
        [sys.executable, str(TESTS / "worker_script.py"), fake.url, "etl", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        until(lambda: job.status == "claimed")
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        later = fake.state.add("etl", {"sleep": 0})
        output, _ = process.communicate(timeout=DEADLINE)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert (job.status, job.result) == ("completed", {"slept": 1.5}), output
    assert later.status == "pending", "no claim after SIGTERM"
    assert all(at < signalled for at, *_ in fake.state.calls("claim")[1:]), output
    assert "SIGTERM: worker stops claiming and finishes the" in output
    assert f"'event': 'worker.job_completed', 'queue': 'etl', 'job_id': '{job.id}'" in output
    assert "'event': 'worker.stopped'" in output


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (Retry("later", after=5), ("later", True, 5)),
        (Retry(), ("retry requested", True, None)),
        (Fatal("never"), ("never", False, None)),
        (KeyError("sku"), ("KeyError: 'sku'", True, None)),
        (RuntimeError(), ("RuntimeError", True, None)),
    ],
)
def test_outcome_of(error: Exception, outcome: tuple[str, bool, float | None]) -> None:
    assert outcome_of(error) == outcome


@pytest.mark.parametrize(
    ("job", "visibility", "lease"),
    [
        ({"visibilityTimeout": 12}, None, 12.0),
        ({"visibilityTimeout": 12}, 40, 40.0),
        (
            {"claimedAt": "2026-01-01T00:00:00Z", "leaseExpiresAt": "2026-01-01T00:01:00Z"},
            None,
            60.0,
        ),
        ({}, None, 30.0),
    ],
)
def test_lease_seconds(job: dict[str, Any], visibility: float | None, lease: float) -> None:
    assert lease_seconds(job, visibility) == lease


def test_concurrency_must_be_positive(client: Client) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Worker(client, "etl", print, concurrency=0)
