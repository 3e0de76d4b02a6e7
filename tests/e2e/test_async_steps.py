"""Async steps over real processes: 202, callbacks, heartbeats, deadlines, tokens."""

from __future__ import annotations

import time
from typing import Any

import pytest
from contract import assert_problem, parse_utc, steps_by_id, unique_id
from harness import BatonClient, BatonServer, HandlerClient
from helpers_failure import (
    ASYNC_ANSWER,
    WAIT,
    callback_url,
    ended,
    fixed,
    followed_up,
    heartbeat,
    once,
    post_callback,
    statuses,
    step,
    tampered,
    wait_step,
)


def async_then(*actions: dict[str, Any]) -> dict[str, Any]:
    """An async answer after which the handler calls Baton back."""
    return ASYNC_ANSWER | {"then": list(actions)}


def wait_accepted(api: BatonClient, workflow_id: str, step_id: str, count: int = 1) -> None:
    """Wait until Baton has recorded ``count`` answers of the step (e.g. its 202)."""
    deadline = time.monotonic() + WAIT
    while len(api.step(workflow_id, step_id)["attemptLog"]) < count:
        assert time.monotonic() < deadline, api.step(workflow_id, step_id)
        time.sleep(0.05)


def test_an_async_step_completes_through_its_callback(
    api: BatonClient, handler: HandlerClient, baton: BatonServer
) -> None:
    wid = unique_id("async")
    success = {"success": True, "result": {"id": 7}}
    handler.script(job=[async_then({"delay": 1, "json": success})])
    api.create(
        {
            "id": wid,
            "steps": [step(handler, "job", retries=once()), step(handler, "next", "job")],
        }
    )

    [job] = handler.wait_for(ended, name="job")
    assert job["response_status"] == 202
    assert callback_url(job).startswith(f"{baton.url}/v1/callbacks/")
    wait_accepted(api, wid, "job")
    waiting = api.get(wid)
    # Still waiting for the callback, which the handler has not sent yet.
    assert statuses(waiting) == {"job": "running", "next": "pending"}
    assert waiting["status"] == "running"
    assert handler.requests("next") == []

    document = api.wait_status(wid, "completed", WAIT)

    [job] = handler.wait_for(followed_up, name="job")
    [answer] = job["followups"]
    assert answer["status"] == 200, answer
    assert answer["json"] == {"accepted": True, "stepId": "job", "status": "completed"}
    [following] = handler.requests("next")
    assert following["received_mono"] >= answer["sent_mono"]
    assert following["json"]["previousSteps"]["job"] == {"status": "completed", "result": {"id": 7}}
    item = steps_by_id(document)["job"]
    assert (item["status"], item["attempts"], item["result"]) == ("completed", 1, {"id": 7})
    assert document["results"]["job"] == {"id": 7}
    log = api.step(wid, "job")["attemptLog"]
    assert log[0]["httpStatus"] == 202


def test_an_async_failure_is_retried_with_a_new_callback(
    api: BatonClient, handler: HandlerClient
) -> None:
    wid = unique_id("async-fail")
    handler.script(
        job=[
            async_then({"delay": 0.3, "json": {"success": False, "error": "boom"}}),
            async_then({"delay": 0.3, "json": {"success": True, "result": 2}}),
        ]
    )
    api.create({"id": wid, "steps": [step(handler, "job", retries=fixed(0.1, 2))]})

    document = api.wait_status(wid, "completed", WAIT)

    first, second = handler.wait_for(lambda r: followed_up(r, 2), name="job")
    assert [r["headers"]["baton-attempt"] for r in (first, second)] == ["1", "2"]
    assert first["headers"]["webhook-id"] == second["headers"]["webhook-id"]
    assert callback_url(first) != callback_url(second)
    [refused] = first["followups"]
    assert refused["status"] == 200, refused
    assert refused["json"]["accepted"] is True
    assert refused["json"]["stepId"] == "job"
    assert refused["json"]["status"] == "retrying"
    assert second["followups"][0]["json"]["status"] == "completed"
    item = steps_by_id(document)["job"]
    assert (item["status"], item["attempts"], item["result"]) == ("completed", 2, 2)
    errors = [e["error"] for e in api.step(wid, "job")["attemptLog"] if e["error"]]
    assert [(e["code"], e["message"]) for e in errors] == [("handler_error", "boom")]
    # The first attempt's token is stale now.
    assert_problem(post_callback(callback_url(first), {"success": True, "result": 1}), 410)
    assert api.get(wid)["results"]["job"] == 2


def test_an_async_failure_on_the_last_attempt_fails_the_step(
    api: BatonClient, handler: HandlerClient
) -> None:
    wid = unique_id("async-fail-last")
    failure = {"success": False, "error": "out of paper"}
    handler.script(job=[async_then({"delay": 0.2, "json": failure})])
    api.create({"id": wid, "steps": [step(handler, "job", retries=once())]})

    document = api.wait_status(wid, "failed", WAIT)

    [job] = handler.wait_for(followed_up, name="job")
    assert job["followups"][0]["json"]["status"] == "failed"
    item = steps_by_id(document)["job"]
    assert item["error"]["code"] == "handler_error"
    assert item["error"]["message"] == "out of paper"
    assert document["error"]["stepId"] == "job"


@pytest.mark.slow
def test_heartbeats_push_the_deadline_out(api: BatonClient, handler: HandlerClient) -> None:
    wid = unique_id("heartbeat")
    handler.script(job=[ASYNC_ANSWER])
    api.create({"id": wid, "steps": [step(handler, "job", timeout=1, retries=once())]})
    [job] = handler.wait_for(ended, name="job")
    url = callback_url(job)
    wait_accepted(api, wid, "job")

    deadlines = []
    started = time.monotonic()
    while time.monotonic() - started < 2:
        answer = heartbeat(url)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["stepId"] == "job"
        deadlines.append(parse_utc(body["deadline"]))
        time.sleep(0.5)
    assert statuses(api.get(wid))["job"] == "running"
    completed = post_callback(url, {"success": True, "result": "late but alive"})

    assert completed.status_code == 200, completed.text
    document = api.wait_status(wid, "completed", WAIT)
    assert len(deadlines) >= 4
    assert deadlines == sorted(deadlines)
    assert deadlines[-1] > deadlines[0]
    # Well past the one-second step timeout, and never timed out.
    assert time.monotonic() - job["ended_mono"] >= 2
    item = steps_by_id(document)["job"]
    assert (item["attempts"], item["result"], item["error"]) == (1, "late but alive", None)
    assert len(handler.requests("job")) == 1


@pytest.mark.slow
def test_an_async_step_without_a_callback_times_out(
    api: BatonClient, handler: HandlerClient
) -> None:
    wid = unique_id("async-timeout")
    handler.script(job=[ASYNC_ANSWER])
    api.create({"id": wid, "steps": [step(handler, "job", timeout=1, retries=fixed(0.1, 2))]})

    document = api.wait_status(wid, "failed", WAIT)

    first, second = handler.wait_for(lambda r: ended(r, 2), name="job")
    assert second["received_mono"] - first["ended_mono"] >= 1
    assert first["headers"]["webhook-id"] == second["headers"]["webhook-id"]
    item = steps_by_id(document)["job"]
    assert (item["status"], item["attempts"]) == ("failed", 2)
    assert item["error"]["code"] == "timeout"
    timeouts = [e for e in api.step(wid, "job")["attemptLog"] if e["error"]]
    assert [e["error"]["code"] for e in timeouts] == ["timeout", "timeout"]
    # Too late: the attempt is over.
    assert_problem(post_callback(callback_url(second), {"success": True}), 410)


def test_a_tampered_token_is_forbidden(
    api: BatonClient, handler: HandlerClient, baton: BatonServer
) -> None:
    wid = unique_id("async-forged")
    handler.script(job=[ASYNC_ANSWER])
    api.create({"id": wid, "steps": [step(handler, "job", retries=once())]})
    [job] = handler.wait_for(ended, name="job")
    url = callback_url(job)
    wait_accepted(api, wid, "job")

    assert_problem(post_callback(tampered(url), {"success": True, "result": "forged"}), 403)
    assert_problem(heartbeat(tampered(url)), 403)
    garbage = f"{baton.url}/v1/callbacks/not-a-token"
    assert_problem(post_callback(garbage, {"success": True}), 403)

    assert statuses(api.get(wid))["job"] == "running"
    assert post_callback(url, {"success": True, "result": "real"}).status_code == 200
    assert steps_by_id(api.wait_status(wid, "completed", WAIT))["job"]["result"] == "real"


def test_a_used_token_is_gone(api: BatonClient, handler: HandlerClient) -> None:
    wid = unique_id("async-reused")
    handler.script(job=[ASYNC_ANSWER])
    api.create({"id": wid, "steps": [step(handler, "job", retries=once())]})
    [job] = handler.wait_for(ended, name="job")
    url = callback_url(job)
    wait_accepted(api, wid, "job")

    first = post_callback(url, {"success": True, "result": 1})
    assert first.status_code == 200, first.text
    assert first.json() == {"accepted": True, "stepId": "job", "status": "completed"}

    assert_problem(post_callback(url, {"success": True, "result": 2}), 410)
    assert_problem(post_callback(url, {"success": False, "error": "late"}), 410)
    assert_problem(heartbeat(url), 410)
    document = api.wait_status(wid, "completed", WAIT)
    assert steps_by_id(document)["job"]["result"] == 1


def test_a_callback_needs_a_boolean_success(api: BatonClient, handler: HandlerClient) -> None:
    wid = unique_id("async-422")
    handler.script(job=[ASYNC_ANSWER])
    api.create({"id": wid, "steps": [step(handler, "job", retries=once())]})
    [job] = handler.wait_for(ended, name="job")
    url = callback_url(job)
    wait_accepted(api, wid, "job")

    assert_problem(post_callback(url, {"result": 1}), 422)
    assert_problem(post_callback(url, {"success": "yes", "result": 1}), 422)
    assert_problem(post_callback(url, [True]), 422)

    assert statuses(api.get(wid))["job"] == "running"
    assert post_callback(url, {"success": True, "result": 3}).status_code == 200
    assert steps_by_id(api.wait_status(wid, "completed", WAIT))["job"]["result"] == 3


@pytest.mark.slow
def test_a_heartbeat_while_the_request_is_in_flight_is_a_conflict(
    api: BatonClient, handler: HandlerClient
) -> None:
    wid = unique_id("async-409")
    handler.script(job=[ASYNC_ANSWER | {"delay": 2}])
    api.create({"id": wid, "steps": [step(handler, "job", retries=once())]})
    [job] = handler.wait_for(lambda r: len(r) == 1, name="job")
    url = callback_url(job)

    assert_problem(heartbeat(url), 409)

    handler.wait_for(ended, name="job")
    wait_accepted(api, wid, "job")
    assert heartbeat(url).status_code == 200
    assert post_callback(url, {"success": True}).status_code == 200
    api.wait_status(wid, "completed", WAIT)


def test_cancelling_a_waiting_async_step(api: BatonClient, handler: HandlerClient) -> None:
    wid = unique_id("async-cancel")
    handler.script(job=[ASYNC_ANSWER])
    api.create({"id": wid, "steps": [step(handler, "job"), step(handler, "next", "job")]})
    [job] = handler.wait_for(ended, name="job")
    url = callback_url(job)
    wait_accepted(api, wid, "job")

    response = api.http.post(f"/v1/workflows/{wid}/cancel")

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    document = wait_step(api, wid, "job", "cancelled")
    assert statuses(document) == {"job": "cancelled", "next": "cancelled"}
    assert_problem(post_callback(url, {"success": True, "result": 1}), 410)
    assert api.get(wid)["status"] == "cancelled"
    assert handler.requests("next") == []
