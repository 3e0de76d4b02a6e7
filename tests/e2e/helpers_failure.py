"""Shared pieces of the failure, saga, async and action end-to-end tests."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import httpx
from harness import BatonClient, HandlerClient

#: Generous: the machine has two cores and other suites may run alongside.
WAIT = 30.0
#: onComplete / onError hooks are retried with backoff; give them longer.
CALLBACK_WAIT = 90.0
#: How long to keep watching for a request that must never come.
QUIET = 1.5

#: An async handler's answer (DESIGN §4).
ASYNC_ANSWER = {"status": 202, "json": {"async": True}}


def step(handler: HandlerClient, step_id: str, *depends_on: str, **extra: Any) -> dict[str, Any]:
    """A step whose URL is the handler's ``/steps/<step_id>``."""
    body: dict[str, Any] = {"id": step_id, "url": handler.step_url(step_id)}
    if depends_on:
        body["dependsOn"] = list(depends_on)
    return body | extra


def fixed(delay: float = 0.1, attempts: int = 3) -> dict[str, Any]:
    """A quick, deterministic retry policy."""
    return {"maxAttempts": attempts, "backoff": "fixed", "delay": delay, "jitter": False}


def once() -> dict[str, Any]:
    """No retries at all."""
    return fixed(0.1, 1)


def default_result(handler: HandlerClient, name: str, attempt: int = 1) -> dict[str, Any]:
    """What the handler app answers unscripted, as Baton stores it."""
    return {"step": handler.name(name), "attempt": attempt}


def statuses(document: dict[str, Any]) -> dict[str, str]:
    """``{step id: status}`` of a status document."""
    return {s["id"]: s["status"] for s in document["steps"]}


def compensation_statuses(document: dict[str, Any]) -> dict[str, str | None]:
    return {s["id"]: s["compensationStatus"] for s in document["steps"]}


def names(records: Iterable[dict[str, Any]]) -> list[str]:
    return [r["name"] for r in records]


def types(events: Iterable[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def has_event(kind: str, step_id: str | None = None) -> Callable[[list[dict[str, Any]]], bool]:
    """A predicate for ``BatonClient.wait_events``."""

    def predicate(events: list[dict[str, Any]]) -> bool:
        return any(
            e["type"] == kind and (step_id is None or e["stepId"] == step_id) for e in events
        )

    return predicate


def wait_step(
    api: BatonClient,
    workflow_id: str,
    step_id: str,
    wanted: str | Iterable[str],
    timeout: float = WAIT,
) -> dict[str, Any]:
    """Poll until one step has one of the ``wanted`` statuses; return the workflow."""
    wanted_set = {wanted} if isinstance(wanted, str) else set(wanted)
    deadline = time.monotonic() + timeout
    while True:
        document = api.get(workflow_id)
        if statuses(document)[step_id] in wanted_set:
            return document
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"step {step_id} of {workflow_id} not {sorted(wanted_set)} after {timeout} s: "
                f"{statuses(document)} ({document['status']})"
            )
        time.sleep(0.05)


def assert_never_called(
    handler: HandlerClient, name: str, *, workflow_id: str | None = None, quiet: float = QUIET
) -> None:
    """``name`` received nothing, and still receives nothing for ``quiet`` seconds."""
    deadline = time.monotonic() + quiet
    while True:
        records = handler.requests(name, workflow_id=workflow_id)
        assert records == [], f"{name} was called: {[r['headers'] for r in records]}"
        if time.monotonic() >= deadline:
            return
        time.sleep(0.1)


def hooks_with_status(handler: HandlerClient, name: str, status: str) -> list[dict[str, Any]]:
    """The recorded onComplete / onError requests to ``name`` whose body has ``status``."""
    return [
        r
        for r in handler.requests(name, kind="hooks")
        if isinstance(r["json"], dict) and r["json"].get("status") == status
    ]


# Async steps.


def callback_url(record: dict[str, Any]) -> str:
    """The ``callbackUrl`` Baton put in a recorded step request."""
    url = record["json"]["callbackUrl"]
    assert isinstance(url, str) and "/v1/callbacks/" in url, url
    return url


def tampered(url: str) -> str:
    """``url`` with one character of its token's signature changed."""
    parts = urlsplit(url)
    token = parts.path.rsplit("/", 1)[-1]
    # Not the last character: its low bits may be base64 padding that decodes the same.
    index = len(token) - 10
    swapped = "A" if token[index] != "A" else "B"
    forged = token[:index] + swapped + token[index + 1 :]
    return url[: -len(token)] + forged


def post_callback(url: str, payload: Any = None, *, content: bytes | None = None) -> httpx.Response:
    """POST to a callback URL as a handler would: no API key."""
    with httpx.Client(timeout=10.0, trust_env=False) as client:
        if content is not None:
            return client.post(url, content=content, headers={"content-type": "application/json"})
        return client.post(url, json=payload)


def heartbeat(url: str) -> httpx.Response:
    return post_callback(f"{url}/heartbeat", {})


def ended(records: list[dict[str, Any]], count: int = 1) -> bool:
    """At least ``count`` records and every one of them answered."""
    return len(records) >= count and all(r["ended_mono"] is not None for r in records)


def followed_up(records: list[dict[str, Any]], count: int = 1, actions: int = 1) -> bool:
    """At least ``count`` records, each of whose ``then`` actions all finished."""
    return len(records) >= count and all(
        len(r.get("followups", [])) >= actions for r in records[:count]
    )
