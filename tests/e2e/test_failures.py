"""Failed attempts over real processes: retries, timeouts, failFast, conditions, deadlines."""

from __future__ import annotations

import time
from email.utils import formatdate
from itertools import pairwise

import pytest
from contract import STEP_FIELDS, assert_problem, parse_utc, steps_by_id, unique_id
from harness import BatonClient, HandlerClient, free_port
from helpers_failure import (
    QUIET,
    WAIT,
    assert_never_called,
    ended,
    fixed,
    names,
    once,
    statuses,
    step,
    types,
    wait_step,
)

ONE_MIB = 1024 * 1024


def step_events(events: list[dict], step_id: str, kinds: set[str]) -> list[str]:
    return [e["type"] for e in events if e["stepId"] == step_id and e["type"] in kinds]


# Retries and backoff.


def test_exponential_backoff_doubles_the_delay(api: BatonClient, handler: HandlerClient) -> None:
    wid = unique_id("expo")
    handler.script(a=[{"status": 500}, {"status": 500}, {"status": 200}])
    retries = {"maxAttempts": 3, "backoff": "exponential", "delay": 0.2, "jitter": False}
    api.create({"id": wid, "steps": [step(handler, "a", retries=retries)]})

    document = api.wait_status(wid, "completed", WAIT)

    records = handler.requests("a")
    assert [r["response_status"] for r in records] == [500, 500, 200]
    assert [r["headers"]["baton-attempt"] for r in records] == ["1", "2", "3"]
    gaps = [later["received_mono"] - earlier["ended_mono"] for earlier, later in pairwise(records)]
    # delay·2^(n-1) before attempt n+1: 0.2 s, then 0.4 s.
    assert gaps[0] >= 0.2 * 0.95, gaps
    assert gaps[1] >= 0.4 * 0.95, gaps
    assert steps_by_id(document)["a"]["attempts"] == 3


def test_a_404_is_not_retried(api: BatonClient, handler: HandlerClient) -> None:
    wid = unique_id("404")
    handler.script(a=[{"status": 404, "json": {"detail": "gone"}}, {"status": 200}])
    api.create({"id": wid, "steps": [step(handler, "a", retries=fixed(0.1, 5))]})

    document = api.wait_status(wid, "failed", WAIT)
    time.sleep(0.5)

    assert len(handler.requests("a")) == 1
    item = steps_by_id(document)["a"]
    assert (item["status"], item["attempts"], item["maxAttempts"]) == ("failed", 1, 5)
    assert item["error"]["code"] == "http_error"
    assert item["error"]["httpStatus"] == 404
    events = api.events(wid)
    assert step_events(events, "a", {"step.failed", "step.retrying"}) == ["step.failed"]


def test_500_then_success_keeps_the_webhook_id(api: BatonClient, handler: HandlerClient) -> None:
    wid = unique_id("500")
    handler.script(a=[{"status": 500, "body": "oops"}, {"status": 200}])
    api.create({"id": wid, "steps": [step(handler, "a", retries=fixed(0.1, 3))]})

    document = api.wait_status(wid, "completed", WAIT)

    records = handler.requests("a")
    assert [r["response_status"] for r in records] == [500, 200]
    assert len({r["headers"]["webhook-id"] for r in records}) == 1
    item = steps_by_id(document)["a"]
    assert (item["status"], item["attempts"], item["error"]) == ("completed", 2, None)
    assert item["result"] == {"step": handler.name("a"), "attempt": 2}
    kinds = {"step.failed", "step.retrying", "step.completed"}
    events = api.events(wid)
    assert step_events(events, "a", kinds) == ["step.failed", "step.retrying", "step.completed"]


def test_retry_after_in_seconds_is_honoured(api: BatonClient, handler: HandlerClient) -> None:
    wid = unique_id("retry-after")
    handler.script(a=[{"status": 429, "headers": {"Retry-After": "1"}}, {"status": 200}])
    api.create({"id": wid, "steps": [step(handler, "a", retries=fixed(0.05, 3))]})

    api.wait_status(wid, "completed", WAIT)

    first, second = handler.requests("a")
    assert first["response_status"] == 429
    assert second["received_mono"] - first["ended_mono"] >= 0.95


@pytest.mark.slow
def test_retry_after_as_an_http_date_is_honoured(api: BatonClient, handler: HandlerClient) -> None:
    wid = unique_id("retry-date")
    not_before = time.time() + 3
    retry_after = formatdate(not_before, usegmt=True)
    handler.script(a=[{"status": 503, "headers": {"Retry-After": retry_after}}, {"status": 200}])
    api.create({"id": wid, "steps": [step(handler, "a", retries=fixed(0.05, 3))]})

    api.wait_status(wid, "completed", WAIT)

    first, second = handler.requests("a")
    assert first["response_status"] == 503
    # The header has whole seconds; allow for the truncation.
    assert second["received_at"] >= not_before - 1.0


def test_retry_after_is_capped_by_max_delay(api: BatonClient, handler: HandlerClient) -> None:
    wid = unique_id("retry-cap")
    handler.script(a=[{"status": 429, "headers": {"Retry-After": "600"}}, {"status": 200}])
    retries = {"maxAttempts": 2, "backoff": "fixed", "delay": 0.1, "maxDelay": 1, "jitter": False}
    api.create({"id": wid, "steps": [step(handler, "a", retries=retries)]})

    # Far sooner than the 600 s asked for.
    api.wait_status(wid, "completed", WAIT)

    assert [r["response_status"] for r in handler.requests("a")] == [429, 200]


def test_connection_errors_are_retried(api: BatonClient) -> None:
    wid = unique_id("refused")
    url = f"http://127.0.0.1:{free_port()}/nobody-listens"
    api.create({"id": wid, "steps": [{"id": "a", "url": url, "retries": fixed(0.1, 2)}]})

    document = api.wait_status(wid, "failed", WAIT)

    item = steps_by_id(document)["a"]
    assert (item["status"], item["attempts"]) == ("failed", 2)
    assert item["error"]["code"] == "connection_error"
    assert len(api.step(wid, "a")["attemptLog"]) == 2


def test_a_step_timeout_fails_the_attempt(api: BatonClient, handler: HandlerClient) -> None:
    wid = unique_id("timeout")
    handler.script(a=[{"delay": 2}])
    api.create({"id": wid, "steps": [step(handler, "a", timeout=0.5, retries=once())]})

    document = api.wait_status(wid, "failed", WAIT)

    item = steps_by_id(document)["a"]
    assert (item["status"], item["attempts"]) == ("failed", 1)
    assert item["error"]["code"] == "timeout"
    assert isinstance(item["error"]["message"], str)
    [entry] = api.step(wid, "a")["attemptLog"]
    assert entry["error"]["code"] == "timeout"
    assert document["error"]["code"] == "step_failed"
    assert document["error"]["stepId"] == "a"


def test_3xx_fails_without_following_the_redirect(api: BatonClient, handler: HandlerClient) -> None:
    wid = unique_id("redirect")
    handler.script(a=[{"status": 302, "headers": {"Location": handler.step_url("elsewhere")}}])
    api.create({"id": wid, "steps": [step(handler, "a", retries=fixed(0.1, 3))]})

    document = api.wait_status(wid, "failed", WAIT)

    item = steps_by_id(document)["a"]
    assert (item["status"], item["attempts"]) == ("failed", 1)
    assert item["error"]["code"] == "http_error"
    assert item["error"]["httpStatus"] == 302
    assert len(handler.requests("a")) == 1
    assert_never_called(handler, "elsewhere", quiet=0.5)


# What a 2xx answer can still get wrong.


def test_success_false_with_and_without_retry(api: BatonClient, handler: HandlerClient) -> None:
    wid = unique_id("success-false")
    handler.script(
        busy=[{"json": {"success": False, "error": "busy"}}],
        declined=[{"json": {"success": False, "error": "card declined", "retry": False}}],
    )
    api.create(
        {
            "id": wid,
            "failFast": False,
            "steps": [
                step(handler, "busy", retries=fixed(0.1, 3)),
                step(handler, "declined", retries=fixed(0.1, 3)),
            ],
        }
    )

    document = api.wait_status(wid, "failed", WAIT)

    assert len(handler.requests("busy")) == 3
    assert len(handler.requests("declined")) == 1
    steps = steps_by_id(document)
    for name, attempts, message in (("busy", 3, "busy"), ("declined", 1, "card declined")):
        assert steps[name]["status"] == "failed"
        assert steps[name]["attempts"] == attempts
        assert steps[name]["error"]["code"] == "handler_error"
        assert steps[name]["error"]["message"] == message
    events = api.events(wid)
    retry_kinds = {"step.failed", "step.retrying"}
    assert step_events(events, "busy", retry_kinds) == [
        "step.failed",
        "step.retrying",
        "step.failed",
        "step.retrying",
        "step.failed",
    ]
    assert step_events(events, "declined", retry_kinds) == ["step.failed"]
    assert sorted(document["failedSteps"]) == ["busy", "declined"]


def test_a_result_over_one_mib_is_refused(api: BatonClient, handler: HandlerClient) -> None:
    wid = unique_id("too-large")
    handler.script(a=[{"json": {"success": True, "result": "x" * (ONE_MIB + 16)}}])
    api.create({"id": wid, "steps": [step(handler, "a", retries=once())]})

    document = api.wait_status(wid, "failed", WAIT)

    item = steps_by_id(document)["a"]
    assert item["status"] == "failed"
    assert item["result"] is None
    assert item["error"]["code"] == "result_too_large"
    assert document["results"].get("a") is None
    [entry] = api.step(wid, "a")["attemptLog"]
    assert entry["error"]["code"] == "result_too_large"
    assert entry["responseExcerpt"] is None or len(entry["responseExcerpt"]) <= 2048


def test_a_malformed_success_flag_is_an_invalid_response(
    api: BatonClient, handler: HandlerClient
) -> None:
    wid = unique_id("invalid")
    handler.script(a=[{"json": {"success": "yes", "result": 1}}])
    api.create({"id": wid, "steps": [step(handler, "a", retries=once())]})

    document = api.wait_status(wid, "failed", WAIT)

    item = steps_by_id(document)["a"]
    assert item["status"] == "failed"
    assert item["error"]["code"] == "invalid_response"
    assert isinstance(item["error"]["message"], str)


def test_the_attempt_log_records_every_attempt(api: BatonClient, handler: HandlerClient) -> None:
    wid = unique_id("log")
    handler.script(
        a=[
            {"status": 503, "body": "x" * 5000},
            {"status": 200, "json": {"success": True, "result": {"ok": 1}}},
        ]
    )
    api.create({"id": wid, "steps": [step(handler, "a", retries=fixed(0.1, 3))]})
    api.wait_status(wid, "completed", WAIT)

    detail = api.step(wid, "a")

    assert set(detail) >= STEP_FIELDS | {"attemptLog"}
    assert (detail["id"], detail["status"], detail["attempts"]) == ("a", "completed", 2)
    records = handler.requests("a")
    log = detail["attemptLog"]
    assert len(log) == 2
    for number, (entry, record) in enumerate(zip(log, records, strict=True), start=1):
        assert set(entry) >= {
            "kind",
            "number",
            "webhookId",
            "startedAt",
            "durationMs",
            "httpStatus",
            "outcome",
            "error",
            "responseExcerpt",
        }, sorted(entry)
        assert entry["kind"] == "step"
        assert entry["number"] == number
        assert entry["webhookId"] == record["headers"]["webhook-id"]
        parse_utc(entry["startedAt"])
        assert isinstance(entry["durationMs"], int | float)
        assert entry["durationMs"] >= 0
    failed, completed = log
    assert parse_utc(failed["startedAt"]) <= parse_utc(completed["startedAt"])
    assert failed["httpStatus"] == 503
    assert failed["outcome"] == "failed"
    assert failed["error"]["code"] == "http_error"
    assert failed["error"]["httpStatus"] == 503
    assert failed["responseExcerpt"].startswith("xxxx")
    assert len(failed["responseExcerpt"]) <= 2048
    assert completed["httpStatus"] == 200
    assert completed["outcome"] == "completed"
    assert completed["error"] is None
    assert '"ok"' in completed["responseExcerpt"]


# failFast and continueOnFailure.


@pytest.mark.slow
def test_fail_fast_cancels_everything_not_yet_sent(
    api: BatonClient, handler: HandlerClient
) -> None:
    wid = unique_id("fail-fast")
    handler.script(
        a=[{"status": 404, "delay": 0.5}],
        slow=[{"delay": 3}],
        flaky=[{"status": 500}],
    )
    api.create(
        {
            "id": wid,
            "steps": [
                step(handler, "a", retries=once()),
                step(handler, "after_a", "a"),
                step(handler, "slow"),
                step(handler, "after_slow", "slow"),
                # Waiting for its second attempt when "a" fails.
                step(handler, "flaky", retries=fixed(10, 3)),
            ],
        }
    )

    during = wait_step(api, wid, "flaky", "cancelled")
    # Cancelled at once, while the slow request is still in flight.
    assert statuses(during)["slow"] == "running"
    assert during["status"] == "running"

    document = api.wait_status(wid, "failed", WAIT)

    [slow] = handler.wait_for(ended, name="slow")
    assert statuses(document) == {
        "a": "failed",
        "after_a": "cancelled",
        "slow": "completed",
        "after_slow": "cancelled",
        "flaky": "cancelled",
    }
    assert document["error"]["code"] == "step_failed"
    assert document["error"]["stepId"] == "a"
    assert isinstance(document["error"]["message"], str)
    assert document["failedSteps"] == ["a"]
    assert document["completedSteps"] == ["slow"]
    assert parse_utc(document["completedAt"]).timestamp() >= slow["ended_at"] - 0.05
    assert len(handler.requests("flaky")) == 1
    assert_never_called(handler, "after_slow")
    assert_never_called(handler, "after_a", quiet=0)
    cancelled = {e["stepId"] for e in api.events(wid) if e["type"] == "step.cancelled"}
    assert cancelled == {"after_a", "after_slow", "flaky"}


@pytest.mark.slow
def test_without_fail_fast_independent_branches_run_on(
    api: BatonClient, handler: HandlerClient
) -> None:
    wid = unique_id("no-fail-fast")
    handler.script(a=[{"status": 404, "delay": 0.2}], slow=[{"delay": 1.5}])
    api.create(
        {
            "id": wid,
            "failFast": False,
            "steps": [
                step(handler, "a", retries=once()),
                step(handler, "after_a", "a"),
                step(handler, "slow"),
                step(handler, "after_slow", "slow"),
            ],
        }
    )

    document = api.wait_status(wid, "failed", WAIT)

    [a] = handler.requests("a")
    [after_slow] = handler.requests("after_slow")
    # Dispatched after the failure: the branch was not stopped by it.
    assert after_slow["received_mono"] >= a["ended_mono"]
    assert after_slow["json"]["previousSteps"]["slow"]["status"] == "completed"
    assert statuses(document) == {
        "a": "failed",
        "after_a": "cancelled",
        "slow": "completed",
        "after_slow": "completed",
    }
    assert document["error"]["code"] == "step_failed"
    assert document["error"]["stepId"] == "a"
    assert sorted(document["completedSteps"]) == ["after_slow", "slow"]
    assert_never_called(handler, "after_a", quiet=0.5)


def test_continue_on_failure_lets_dependents_run(api: BatonClient, handler: HandlerClient) -> None:
    wid = unique_id("continue")
    handler.script(a=[{"json": {"success": False, "error": "no stock"}}])
    api.create(
        {
            "id": wid,
            "steps": [
                step(handler, "a", retries=fixed(0.1, 2), continueOnFailure=True),
                step(handler, "b", "a"),
                step(handler, "c", "b"),
            ],
        }
    )

    document = api.wait_status(wid, "completed", WAIT)

    assert len(handler.requests("a")) == 2
    [b] = handler.requests("b")
    failed = b["json"]["previousSteps"]["a"]
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "handler_error"
    assert failed["error"]["message"] == "no stock"
    [c] = handler.requests("c")
    assert c["json"]["previousSteps"]["a"]["status"] == "failed"
    assert c["json"]["previousSteps"]["b"]["status"] == "completed"
    assert statuses(document) == {"a": "failed", "b": "completed", "c": "completed"}
    assert document["failedSteps"] == ["a"]
    assert document["completedSteps"] == ["b", "c"]
    assert document["error"] is None


# Conditions.


def test_a_false_condition_skips_the_step_and_dependents_proceed(
    api: BatonClient, handler: HandlerClient
) -> None:
    wid = unique_id("when-skip")
    api.create(
        {
            "id": wid,
            "context": {"total": 0},
            "steps": [
                step(handler, "validate"),
                step(handler, "charge", "validate", when="context.total > 0"),
                step(handler, "ship", "charge"),
            ],
        }
    )

    document = api.wait_status(wid, "completed", WAIT)

    assert names(handler.requests()) == ["validate", "ship"]
    [ship] = handler.requests("ship")
    assert ship["json"]["previousSteps"]["charge"] == {"status": "skipped"}
    assert ship["json"]["previousSteps"]["validate"]["status"] == "completed"
    assert statuses(document) == {"validate": "completed", "charge": "skipped", "ship": "completed"}
    assert document["skippedSteps"] == ["charge"]
    assert document["completedSteps"] == ["validate", "ship"]
    assert steps_by_id(document)["charge"]["attempts"] == 0
    skipped = [e for e in api.events(wid) if e["type"] == "step.skipped"]
    assert [e["stepId"] for e in skipped] == ["charge"]


def test_conditions_see_results_and_statuses_of_earlier_steps(
    api: BatonClient, handler: HandlerClient
) -> None:
    wid = unique_id("when-results")
    handler.script(score=[{"json": {"success": True, "result": {"score": 5}}}])
    api.create(
        {
            "id": wid,
            "context": {"threshold": 3},
            "steps": [
                step(handler, "score"),
                step(handler, "high", "score", when="steps.score.result.score > 10"),
                step(handler, "pass", "score", when="steps.score.result.score > context.threshold"),
                step(handler, "done", "score", when="steps.score.status == 'completed'"),
                step(handler, "after_high", "high", when="steps.high.status == 'skipped'"),
            ],
        }
    )

    document = api.wait_status(wid, "completed", WAIT)

    assert statuses(document) == {
        "score": "completed",
        "high": "skipped",
        "pass": "completed",
        "done": "completed",
        "after_high": "completed",
    }
    assert sorted(set(names(handler.requests()))) == ["after_high", "done", "pass", "score"]
    assert_never_called(handler, "high", quiet=0)


def test_an_invalid_condition_is_refused_at_creation(
    api: BatonClient, handler: HandlerClient
) -> None:
    wid = unique_id("when-invalid")
    body = {
        "id": wid,
        "steps": [step(handler, "a"), step(handler, "b", "a", when="context.total >")],
    }

    problem = assert_problem(api.http.post("/v1/workflows", json=body), 422)

    assert [e["path"] for e in problem["errors"]] == ["steps[1].when"], problem
    assert_problem(api.http.get(f"/v1/workflows/{wid}"), 404)


def test_a_condition_that_cannot_be_evaluated_fails_the_step(
    api: BatonClient, handler: HandlerClient
) -> None:
    wid = unique_id("when-error")
    api.create(
        {
            "id": wid,
            "context": {"present": 1},
            "steps": [
                step(handler, "a"),
                step(handler, "b", "a", when="context.missing.field > 1"),
                step(handler, "c", "b"),
            ],
        }
    )

    document = api.wait_status(wid, "failed", WAIT)

    item = steps_by_id(document)["b"]
    assert item["status"] == "failed"
    assert item["error"]["code"] == "condition_error"
    assert item["error"]["message"]
    assert statuses(document)["c"] == "cancelled"
    assert document["error"]["code"] == "step_failed"
    assert document["error"]["stepId"] == "b"
    assert names(handler.requests()) == ["a"]


# Workflow deadline.


@pytest.mark.slow
def test_the_workflow_timeout_fails_it_and_cancels_what_is_left(
    api: BatonClient, handler: HandlerClient
) -> None:
    wid = unique_id("wf-timeout")
    handler.script(slow=[{"delay": 3}])
    api.create(
        {
            "id": wid,
            "timeout": 1,
            "onError": handler.hook_url("failed"),
            "steps": [step(handler, "slow"), step(handler, "next", "slow")],
        }
    )

    document = api.wait_status(wid, "failed", WAIT)

    [slow] = handler.wait_for(ended, name="slow")
    created = parse_utc(document["createdAt"])
    assert (parse_utc(document["completedAt"]) - created).total_seconds() >= 1
    assert document["error"]["code"] == "workflow_timeout"
    assert isinstance(document["error"]["message"], str)
    steps = steps_by_id(document)
    assert steps["next"]["status"] == "cancelled"
    # The request in flight was let finish and its answer recorded.
    assert steps["slow"]["status"] == "completed"
    assert parse_utc(document["completedAt"]).timestamp() >= slow["ended_at"] - 0.05
    assert_never_called(handler, "next", quiet=QUIET)
    assert "workflow.failed" in types(api.events(wid))
    [hook] = handler.wait_for(lambda r: len(r) >= 1, 90, name="failed")
    assert hook["json"]["status"] == "failed"
    assert hook["json"]["error"]["code"] == "workflow_timeout"
