"""The pure engine: answer classification, backoff, retry decisions, finishing rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from app.engine import (
    MAX_RESULT_BYTES,
    AttemptResult,
    Backoff,
    DeliveryKind,
    OnFailure,
    Outcome,
    RetryPolicy,
    StepErrorCode,
    StepStatus,
    WorkflowErrorCode,
    WorkflowStatus,
    ancestor_state,
    backoff_delay,
    callback_kind_for,
    classify_answer,
    classify_connection_error,
    classify_malformed_answer,
    classify_timeout,
    decide_after_attempt,
    dooms_workflow,
    parse_retry_after,
    previous_steps,
    satisfies_dependents,
    starts_dependents_at_once,
    workflow_error,
)


def body(doc: object) -> bytes:
    return orjson.dumps(doc)


@pytest.mark.parametrize(
    ("status", "payload", "outcome", "result", "code", "retryable"),
    [
        (
            200,
            body({"success": True, "result": {"total": 4200}}),
            Outcome.COMPLETED,
            {"total": 4200},
            None,
            False,
        ),
        (200, body({"success": True}), Outcome.COMPLETED, None, None, False),
        (201, body({"orderId": 1}), Outcome.COMPLETED, {"orderId": 1}, None, False),
        (200, body([1, 2]), Outcome.COMPLETED, [1, 2], None, False),
        (200, b"plain text, not json", Outcome.COMPLETED, None, None, False),
        (204, b"", Outcome.COMPLETED, None, None, False),
        (
            200,
            body({"success": False, "error": "card declined"}),
            Outcome.FAILED,
            None,
            StepErrorCode.HANDLER_ERROR,
            True,
        ),
        (
            200,
            body({"success": False, "error": "bad", "retry": False}),
            Outcome.FAILED,
            None,
            StepErrorCode.HANDLER_ERROR,
            False,
        ),
        (
            200,
            body({"success": "yes"}),
            Outcome.FAILED,
            None,
            StepErrorCode.INVALID_RESPONSE,
            False,
        ),
        (202, body({"async": True}), Outcome.ASYNC, None, None, False),
        (200, body({"async": True}), Outcome.COMPLETED, {"async": True}, None, False),
        (408, b"", Outcome.FAILED, None, StepErrorCode.HTTP_ERROR, True),
        (425, b"", Outcome.FAILED, None, StepErrorCode.HTTP_ERROR, True),
        (429, b"", Outcome.FAILED, None, StepErrorCode.HTTP_ERROR, True),
        (500, b"boom", Outcome.FAILED, None, StepErrorCode.HTTP_ERROR, True),
        (503, b"", Outcome.FAILED, None, StepErrorCode.HTTP_ERROR, True),
        (400, b"", Outcome.FAILED, None, StepErrorCode.HTTP_ERROR, False),
        (404, b"", Outcome.FAILED, None, StepErrorCode.HTTP_ERROR, False),
        (422, b"", Outcome.FAILED, None, StepErrorCode.HTTP_ERROR, False),
        (302, b"", Outcome.FAILED, None, StepErrorCode.HTTP_ERROR, False),
    ],
)
def test_answer_table(status, payload, outcome, result, code, retryable) -> None:
    classified = classify_answer(status, payload)
    assert classified.outcome is outcome
    assert classified.result == result
    assert classified.http_status == status
    if code is None:
        assert classified.error is None
    else:
        assert classified.error is not None
        assert classified.error.code is code
        assert classified.error.http_status == status
        assert classified.retryable is retryable


def test_handler_error_message_is_the_handlers_error() -> None:
    classified = classify_answer(200, body({"success": False, "error": "card declined"}))
    assert classified.error is not None
    assert classified.error.message == "card declined"
    assert classified.error.to_dict() == {
        "code": "handler_error",
        "message": "card declined",
        "httpStatus": 200,
    }


def test_result_over_one_mib_is_refused() -> None:
    big = body({"success": True, "result": "x" * MAX_RESULT_BYTES})
    classified = classify_answer(200, big)
    assert classified.error is not None
    assert classified.error.code is StepErrorCode.RESULT_TOO_LARGE
    assert not classified.retryable


def test_excerpt_is_bounded() -> None:
    classified = classify_answer(500, b"x" * 100_000)
    assert classified.excerpt is not None
    assert len(classified.excerpt) <= 2048


def test_retry_after_seconds_and_date() -> None:
    now = datetime(2026, 11, 21, 10, 0, 0, tzinfo=UTC)
    later = now + timedelta(seconds=30)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(later.strftime("%a, %d %b %Y %H:%M:%S GMT"), now=now) == 30.0
    assert parse_retry_after("not a date") is None
    assert parse_retry_after(None) is None
    assert classify_answer(429, b"", retry_after="12").retry_after == 12.0


@pytest.mark.parametrize(
    ("backoff", "attempt", "expected"),
    [
        (Backoff.FIXED, 1, 2.0),
        (Backoff.FIXED, 5, 2.0),
        (Backoff.LINEAR, 1, 2.0),
        (Backoff.LINEAR, 3, 6.0),
        (Backoff.EXPONENTIAL, 1, 2.0),
        (Backoff.EXPONENTIAL, 2, 4.0),
        (Backoff.EXPONENTIAL, 4, 16.0),
        (Backoff.EXPONENTIAL, 10, 60.0),  # capped by maxDelay
        (Backoff.EXPONENTIAL, 5000, 60.0),  # no float overflow
    ],
)
def test_backoff_schedules(backoff: Backoff, attempt: int, expected: float) -> None:
    policy = RetryPolicy(backoff=backoff, delay=2.0, max_delay=60.0, jitter=False)
    assert backoff_delay(policy, attempt) == expected


def test_full_jitter_is_a_fraction_of_the_delay() -> None:
    policy = RetryPolicy(delay=4.0, max_delay=60.0, jitter=True)
    assert backoff_delay(policy, 2, rand=lambda: 0.25) == 2.0
    assert backoff_delay(policy, 2, rand=lambda: 0.0) == 0.0


def test_retry_after_is_honoured_and_capped() -> None:
    policy = RetryPolicy(delay=1.0, max_delay=10.0, jitter=False)
    assert backoff_delay(policy, 1, retry_after=5.0) == 5.0
    assert backoff_delay(policy, 1, retry_after=500.0) == 10.0
    # Never sooner than the backoff itself either.
    assert backoff_delay(policy, 4, retry_after=1.0) == 8.0


def test_decisions() -> None:
    policy = RetryPolicy(max_attempts=3, delay=1, jitter=False)
    ok = classify_answer(200, body({"success": True, "result": 1}))
    assert decide_after_attempt(ok, 1, policy).status is StepStatus.COMPLETED
    assert decide_after_attempt(ok, 1, policy).result == 1
    flaky = classify_answer(503, b"")
    retry = decide_after_attempt(flaky, 1, policy)
    assert retry.status is StepStatus.RETRYING
    assert retry.retry_in == 1.0
    assert decide_after_attempt(flaky, 3, policy).status is StepStatus.FAILED
    assert decide_after_attempt(flaky, 1, policy, may_retry=False).status is StepStatus.FAILED
    gone = classify_answer(404, b"")
    assert decide_after_attempt(gone, 1, policy).status is StepStatus.FAILED
    assert decide_after_attempt(classify_timeout(5), 1, policy).status is StepStatus.RETRYING
    refused = classify_connection_error("connection refused")
    assert decide_after_attempt(refused, 1, policy).status is StepStatus.RETRYING
    waiting = AttemptResult(Outcome.ASYNC)
    assert decide_after_attempt(waiting, 1, policy).status is StepStatus.RUNNING


def test_single_attempt_policy_never_retries() -> None:
    policy = RetryPolicy(max_attempts=1)
    assert decide_after_attempt(classify_answer(500, b""), 1, policy).status is StepStatus.FAILED


FAIL, IGNORE, REMOVE, CONTINUE = (
    OnFailure.FAIL,
    OnFailure.IGNORE,
    OnFailure.REMOVE,
    OnFailure.CONTINUE,
)
ALL_OPTIONS = (FAIL, IGNORE, REMOVE, CONTINUE)


@pytest.mark.parametrize(
    ("status", "on_failure", "satisfies", "dooms", "at_once"),
    [
        *((StepStatus.COMPLETED, o, True, False, False) for o in ALL_OPTIONS),
        # A skip is never a failure, whatever the step's option.
        *((StepStatus.SKIPPED, o, True, False, False) for o in ALL_OPTIONS),
        (StepStatus.FAILED, FAIL, False, True, False),
        (StepStatus.FAILED, IGNORE, True, False, False),
        (StepStatus.FAILED, REMOVE, True, False, False),
        (StepStatus.FAILED, CONTINUE, True, False, True),
        *((StepStatus.CANCELLED, o, False, False, False) for o in ALL_OPTIONS),
    ],
)
def test_dependency_rules(status, on_failure, satisfies, dooms, at_once) -> None:
    assert satisfies_dependents(status, on_failure) is satisfies
    assert dooms_workflow(status, on_failure) is dooms
    assert starts_dependents_at_once(status, on_failure) is at_once


def test_a_failed_removed_step_is_left_out_of_previous_steps() -> None:
    states = {
        "a": ancestor_state("failed", None, {"code": "http_error"}, "remove"),
        "b": ancestor_state("failed", None, {"code": "http_error"}, "ignore"),
        "c": ancestor_state("completed", 1, None, "remove"),
    }
    assert previous_steps(["a", "b", "c"], states) == {
        "b": {"status": "failed", "error": {"code": "http_error"}},
        "c": {"status": "completed", "result": 1},
    }


def test_callback_kinds() -> None:
    assert callback_kind_for(WorkflowStatus.COMPLETED) is DeliveryKind.ON_COMPLETE
    for status in (
        WorkflowStatus.FAILED,
        WorkflowStatus.CANCELLED,
        WorkflowStatus.COMPENSATED,
        WorkflowStatus.COMPENSATION_FAILED,
    ):
        assert callback_kind_for(status) is DeliveryKind.ON_ERROR
    assert callback_kind_for(WorkflowStatus.COMPENSATING) is None
    assert callback_kind_for(WorkflowStatus.RUNNING) is None


def test_workflow_error_document() -> None:
    error = workflow_error(WorkflowErrorCode.STEP_FAILED, "charge", {"message": "HTTP 404"})
    assert error == {
        "code": "step_failed",
        "message": "step 'charge' failed: HTTP 404",
        "stepId": "charge",
    }


def test_previous_steps_shapes() -> None:
    states = {
        "a": {"status": "completed", "result": {"x": 1}, "error": None},
        "b": {"status": "skipped", "result": None, "error": None},
        "c": {"status": "failed", "result": None, "error": {"code": "http_error"}},
    }
    assert previous_steps(["a", "b", "c"], states) == {
        "a": {"status": "completed", "result": {"x": 1}},
        "b": {"status": "skipped"},
        "c": {"status": "failed", "error": {"code": "http_error"}},
    }


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "application/x+json"]
)
def test_a_truncated_json_answer_is_an_invalid_response(content_type: str) -> None:
    """A 2xx that says JSON and does not parse is a failed attempt, retried (DESIGN §4)."""
    answer = classify_answer(200, b'{"success": true, "result": ', content_type=content_type)
    assert answer.outcome is Outcome.FAILED
    assert answer.error is not None and answer.error.code is StepErrorCode.INVALID_RESPONSE
    assert answer.retryable
    assert answer.error.http_status == 200


@pytest.mark.parametrize("content_type", [None, "text/plain", "text/html; charset=utf-8"])
def test_a_body_that_is_not_json_and_does_not_say_so_completes(content_type: str | None) -> None:
    answer = classify_answer(200, b"<html>done", content_type=content_type)
    assert answer.outcome is Outcome.COMPLETED
    assert answer.result is None


def test_a_result_holding_nul_is_an_invalid_response_and_nothing_stored_holds_nul() -> None:
    body = b'{"success": true, "result": {"k\\u0000": "v"}}'
    answer = classify_answer(200, body, content_type="application/json")
    assert answer.outcome is Outcome.FAILED
    assert answer.error is not None and answer.error.code is StepErrorCode.INVALID_RESPONSE
    assert not answer.retryable
    assert "\x00" not in (answer.excerpt or "") and "\x00" not in answer.error.message
    nested = classify_answer(200, b'[1, {"a": ["x\\u0000y"]}]')
    assert nested.outcome is Outcome.FAILED
    # An escaped backslash followed by "u0000" is no NUL: the result is kept.
    literal = classify_answer(200, b'{"success": true, "result": "\\\\u0000"}')
    assert literal.outcome is Outcome.COMPLETED and literal.result == "\\u0000"


def test_binary_answers_and_error_messages_are_made_storable() -> None:
    binary = classify_answer(200, b"\x00\x01\x02 binary \x00")
    assert binary.outcome is Outcome.COMPLETED and binary.result is None
    assert binary.excerpt is not None and "\x00" not in binary.excerpt
    failed = classify_answer(500, b"oops\x00")
    assert failed.excerpt == "oops\ufffd"
    handler = classify_answer(200, b'{"success": false, "error": "bad\\u0000input"}')
    assert handler.error is not None and handler.error.message == "bad\ufffdinput"


def test_a_malformed_http_answer_is_a_retried_invalid_response() -> None:
    answer = classify_malformed_answer("Bad status line: b'HTTP/1.1 abc OK'")
    assert answer.outcome is Outcome.FAILED and answer.retryable
    assert answer.error is not None and answer.error.code is StepErrorCode.INVALID_RESPONSE
    assert "not valid HTTP" in answer.error.message
