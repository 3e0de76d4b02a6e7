"""Shared pieces of the durability and scale-out end-to-end tests.

The checks read the handler's records: a record is one request as the handler saw it,
with ``received_mono`` / ``ended_mono`` on the machine's monotonic clock, which every
process here shares (Linux ``CLOCK_MONOTONIC``), so they compare with the test's own
``time.monotonic()`` readings (e.g. the instant a server was killed).
"""

from __future__ import annotations

import concurrent.futures
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx
from harness import BatonClient, BatonServer, HandlerClient

#: A diamond: a, then b and c at once, then d.
DIAMOND: dict[str, list[str]] = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}

#: (workflow id, step id) → that step's requests, in arrival order.
Groups = dict[tuple[str, str], list[dict[str, Any]]]


def dag_body(
    handler: HandlerClient,
    workflow_id: str,
    dag: Mapping[str, list[str]] = DIAMOND,
    *,
    name: str | None = None,
) -> dict[str, Any]:
    """A workflow whose steps are the handler's ``/steps/<step id>``, wired like ``dag``."""
    steps = []
    for step_id, depends_on in dag.items():
        step: dict[str, Any] = {"id": step_id, "url": handler.step_url(step_id)}
        if depends_on:
            step["dependsOn"] = list(depends_on)
        steps.append(step)
    body: dict[str, Any] = {"id": workflow_id, "steps": steps}
    if name is not None:
        body["name"] = name
    return body


def create_despite_crashes(
    api: BatonClient, bodies: list[dict[str, Any]], timeout: float, *, concurrency: int = 8
) -> list[int]:
    """Create every workflow while the server may be killed and restarted under us.

    A create that got no answer is sent again with the same body: 201 if the first never
    arrived, 200 (DESIGN §3 idempotency) if it was committed before the crash. Returns the
    final status code per body.
    """
    deadline = time.monotonic() + timeout

    def create(body: dict[str, Any]) -> int:
        while True:
            try:
                response = api.http.post("/v1/workflows", json=body)
                if response.status_code in (200, 201):
                    return response.status_code
                problem = f"{response.status_code} {response.text[:300]}"
                if response.status_code < 500:
                    raise AssertionError(f"creating {body['id']} answered {problem}")
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= deadline:
                raise AssertionError(f"could not create {body['id']} in {timeout} s: {problem}")
            time.sleep(0.1)

    with concurrent.futures.ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(create, bodies))


def script_delays(handler: HandlerClient, delays: Mapping[str, float]) -> None:
    """Every request to each named step is answered successfully after its delay."""
    handler.script({name: [{"delay": delay}] for name, delay in delays.items()})


def group(records: Iterable[dict[str, Any]]) -> Groups:
    groups: Groups = defaultdict(list)
    for record in records:
        groups[(record["headers"].get("baton-workflow-id"), record["name"])].append(record)
    return dict(groups)


def origin(record: dict[str, Any]) -> str:
    """Which server sent a request: the scheme and host of its body's ``callbackUrl``."""
    url = record["json"]["callbackUrl"]
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def lost(records: Iterable[dict[str, Any]], killed_at: float) -> list[dict[str, Any]]:
    """Requests sent before ``killed_at`` and answered after it: nobody read the answer."""
    return [
        r
        for r in records
        if r["received_mono"] < killed_at and (r["ended_mono"] or float("inf")) > killed_at
    ]


def wait_stats(handler: HandlerClient, predicate: Any, timeout: float, what: str) -> dict[str, Any]:
    """Poll ``handler.stats()`` until ``predicate(stats)``; return the stats."""
    deadline = time.monotonic() + timeout
    while True:
        stats = handler.stats(kind="steps")
        if predicate(stats):
            return stats
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not reached within {timeout} s: {stats}")
        time.sleep(0.05)


def assert_every_step_requested(
    groups: Groups, workflow_ids: Iterable[str], dag: Mapping[str, list[str]] = DIAMOND
) -> None:
    missing = [(wid, step) for wid in workflow_ids for step in dag if (wid, step) not in groups]
    assert not missing, f"{len(missing)} steps never reached the handler, e.g. {missing[:5]}"


def assert_exactly_once(groups: Groups) -> None:
    twice = {key: len(records) for key, records in groups.items() if len(records) != 1}
    assert not twice, (
        f"{len(twice)} steps were requested more than once, e.g. {list(twice.items())[:5]}"
    )


def assert_webhook_ids_kept(groups: Groups) -> None:
    """Every request of one step carried the same ``webhook-id`` (no manual retries here)."""
    changed = {
        key: [r["headers"].get("webhook-id") for r in records]
        for key, records in groups.items()
        if len({r["headers"].get("webhook-id") for r in records}) != 1
    }
    assert not changed, (
        f"{len(changed)} re-sent steps changed webhook-id: {list(changed.items())[:3]}"
    )


def assert_signed(records: Iterable[dict[str, Any]]) -> None:
    unsigned = [(r["name"], r["verify_error"]) for r in records if not r["verified"]]
    assert not unsigned, f"{len(unsigned)} requests failed verification: {unsigned[:3]}"


def assert_dependencies_answered_first(
    groups: Groups, workflow_ids: Iterable[str], dag: Mapping[str, list[str]] = DIAMOND
) -> None:
    """No step's request arrived before every dependency's last successful answer ended."""
    early = []
    for wid in workflow_ids:
        for step, depends_on in dag.items():
            for dependency in depends_on:
                answers = [
                    r["ended_mono"]
                    for r in groups.get((wid, dependency), [])
                    if r["response_status"] == 200
                ]
                if not answers or None in answers:
                    early.append((wid, step, dependency, "dependency not answered"))
                    continue
                done = max(answers)
                for record in groups.get((wid, step), []):
                    if record["received_mono"] < done:
                        gap = done - record["received_mono"]
                        early.append((wid, step, dependency, f"{gap:.3f} s early"))
    assert not early, f"{len(early)} requests came before a dependency was done: {early[:5]}"


def assert_completed(documents: Mapping[str, dict[str, Any]], steps: Iterable[str]) -> None:
    wanted = set(steps)
    wrong = {
        wid: {s["id"]: s["status"] for s in document["steps"]}
        for wid, document in documents.items()
        if document["status"] != "completed"
        or {s["id"] for s in document["steps"] if s["status"] == "completed"} != wanted
    }
    assert not wrong, (
        f"{len(wrong)} workflows not completed step by step: {list(wrong.items())[:3]}"
    )


def assert_refused_for_sqlite(server: BatonServer, code: int | None, what: str) -> None:
    """A process that had to refuse SQLite did, on its own, saying to use PostgreSQL."""
    log = server.log_path.read_text(encoding="utf-8", errors="replace")
    assert code is not None, f"{what} is still running instead of refusing:\n{server.log_tail()}"
    assert "postgresql" in log.lower(), f"{what} did not point to PostgreSQL:\n{server.log_tail()}"
    # A lone process exits with uvicorn's start-up failure code; uvicorn's supervisor for
    # --workers stops everything on a worker's failure but itself returns 0, so the
    # refusal is read from the log there.
    assert code != 0 or "failed to start, stopping the parent process" in log, (
        f"{what} exited 0 without refusing:\n{server.log_tail()}"
    )
    assert "Application startup failed" in log


def assert_clean_sigterm_exit(server: BatonServer, code: int | None) -> None:
    """Shut down cleanly: uvicorn re-raises the SIGTERM it handled once it is done (-15)."""
    log = server.log_path.read_text(encoding="utf-8", errors="replace")
    assert code in (0, -15), f"exit code {code} after SIGTERM:\n{server.log_tail()}"
    assert "Application shutdown complete" in log, server.log_tail()
