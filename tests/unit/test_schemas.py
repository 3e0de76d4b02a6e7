"""Tests for app.schemas: parsing and validating the body of POST /v1/workflows."""

from __future__ import annotations

import copy
import json
from itertools import pairwise
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.errors import (
    BadRequest,
    FieldError,
    PayloadTooLarge,
    ProblemError,
    ValidationFailed,
)
from app.schemas import (
    MAX_BODY_BYTES,
    MAX_DEPTH,
    MAX_STEPS,
    RetryPolicy,
    StepSpec,
    WorkflowCreate,
    canonical_json,
    parse_callback_request,
    parse_cancel_request,
    parse_create_request,
    parse_json_body,
)

BLOCKED_HOSTS = {"10.0.0.1", "blocked.example"}


class UnsafeURL(ValueError):
    """What the SSRF guard raises."""


class ConditionSyntaxError(Exception):
    """What the condition compiler raises: deliberately not a ValueError."""


def check_url(url: str) -> None:
    if urlsplit(url).hostname in BLOCKED_HOSTS:
        raise UnsafeURL("resolves to a private address")


def check_condition(expression: str) -> None:
    if "??" in expression:
        raise ConditionSyntaxError(f"unexpected '?' at column {expression.index('?') + 1}")


def encode(body: Any) -> bytes:
    # The standard library writes NaN, Infinity and integers of any size, so
    # tests can send what orjson would refuse to produce.
    return json.dumps(body).encode()


def parse(body: Any) -> WorkflowCreate:
    raw = body if isinstance(body, bytes) else encode(body)
    workflow, _ = parse_create_request(raw, check_url=check_url, check_condition=check_condition)
    return workflow


def problem(body: Any) -> ProblemError:
    with pytest.raises(ProblemError) as caught:
        parse(body)
    return caught.value


def errors(body: Any) -> list[tuple[str, str]]:
    """The (path, message) pairs of a body that must fail with 422."""
    failure = problem(body)
    assert isinstance(failure, ValidationFailed), failure.detail
    assert failure.status == 422
    return [(e.path, e.message) for e in failure.errors]


def paths(body: Any) -> list[str]:
    return [path for path, _ in errors(body)]


def base() -> dict[str, Any]:
    """A small valid body: b depends on a."""
    return {
        "steps": [
            {"id": "a", "url": "https://shop.example/a"},
            {"id": "b", "url": "https://shop.example/b", "dependsOn": ["a"]},
        ]
    }


def with_change(path: str, value: Any) -> dict[str, Any]:
    """``base()`` with the value at a dotted path (``steps.0.retries.delay``) set."""
    body = base()
    *parents, last = path.split(".")
    target: Any = body
    for part in parents:
        target = target[int(part)] if part.isdigit() else target.setdefault(part, {})
    if last.isdigit():
        target[int(last)] = value
    else:
        target[last] = value
    return body


DESIGN_EXAMPLE = """
{
  "id": "order-123",
  "name": "order-processing",
  "steps": [
    {"id": "validate", "url": "https://shop.example/jobs/validate"},
    {"id": "charge", "url": "https://shop.example/jobs/charge",
     "dependsOn": ["validate"],
     "retries": {"maxAttempts": 3, "backoff": "exponential", "delay": 1, "maxDelay": 60,
                 "jitter": true},
     "timeout": 300,
     "compensation": "https://shop.example/jobs/refund",
     "when": "context.total > 0",
     "continueOnFailure": false,
     "parallel": true}
  ],
  "context": {"orderId": "order_123"},
  "onComplete": "https://shop.example/hooks/done",
  "onError": "https://shop.example/hooks/failed",
  "timeout": 86400,
  "saga": false,
  "failFast": true
}
"""


# ------------------------------------------------------------------- valid bodies


def test_design_example() -> None:
    raw = DESIGN_EXAMPLE.encode()
    workflow, doc = parse_create_request(raw, check_url=check_url, check_condition=check_condition)
    assert doc == json.loads(raw)
    assert workflow.id == "order-123"
    assert workflow.name == "order-processing"
    assert workflow.context == {"orderId": "order_123"}
    assert workflow.on_complete == "https://shop.example/hooks/done"
    assert workflow.on_error == "https://shop.example/hooks/failed"
    assert (workflow.timeout, workflow.saga, workflow.fail_fast) == (86400, False, True)

    validate, charge = workflow.steps
    assert validate.id == "validate"
    assert validate.depends_on == []
    assert validate.retries == RetryPolicy()
    assert validate.timeout == 300
    assert validate.compensation is None
    assert validate.when is None
    assert validate.continue_on_failure is False

    assert charge.depends_on == ["validate"]
    assert charge.retries == RetryPolicy(
        max_attempts=3, backoff="exponential", delay=1, max_delay=60, jitter=True
    )
    assert charge.compensation == "https://shop.example/jobs/refund"
    assert charge.when == "context.total > 0"


def test_defaults() -> None:
    workflow = parse({"steps": [{"id": "only", "url": "http://shop.example"}]})
    assert workflow.id is None
    assert workflow.name is None
    assert workflow.context == {}
    assert workflow.on_complete is None
    assert workflow.on_error is None
    assert workflow.timeout == 86400
    assert workflow.saga is False
    assert workflow.fail_fast is True
    (step,) = workflow.steps
    assert step.timeout == 300
    assert step.continue_on_failure is False
    retries = step.retries
    assert (retries.max_attempts, retries.backoff) == (3, "exponential")
    assert (retries.delay, retries.max_delay, retries.jitter) == (1, 300, True)


def test_defaults_are_not_shared() -> None:
    first, second = parse(base()).steps
    assert first.retries is not second.retries
    assert first.depends_on is not second.depends_on


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("steps.0.retries.maxAttempts", 1),
        ("steps.0.retries.maxAttempts", 100),
        ("steps.0.retries.backoff", "fixed"),
        ("steps.0.retries.backoff", "linear"),
        ("steps.0.retries.delay", 0),
        ("steps.0.retries.delay", 3600),
        ("steps.0.retries.delay", 0.25),
        ("steps.0.retries.maxDelay", 0),
        ("steps.0.retries.maxDelay", 86400.0),
        ("steps.0.retries.jitter", False),
        ("steps.0.timeout", 0.001),
        ("steps.0.timeout", 86400),
        ("timeout", 2678400),
        ("timeout", 1e-3),
        ("steps.0.parallel", False),
        ("steps.0.parallel", None),
        ("steps.0.compensation", None),
        ("steps.0.when", None),
        ("steps.0.when", "x" * 4096),
        ("steps.1.id", "A" * 128),
        ("steps.1.id", "9a_b.c:d-e"),
        ("id", "wf:2024.01_a-b"),
        ("name", "n" * 200),
        ("name", None),
        ("onComplete", None),
        ("steps.0.url", "HTTPS://Shop.Example:8443/a?b=c#d"),
        ("steps.0.url", "http://[::1]:8080/x"),
        ("steps.0.url", "https://bücher.example/"),
        ("steps.0.url", "https://shop.example/" + "x" * 2000),
        ("context", {"deep": {"er": [1, 2.5, None, True, "é"]}}),
        ("context", {"ref": "12345678901234567890123"}),
        ("context", {"max": 2**63 - 1, "min": -(2**63), "tiny": 1e-400}),
    ],
)
def test_accepted_values(path: str, value: Any) -> None:
    parse(with_change(path, value))


def test_parallel_is_accepted_and_ignored() -> None:
    step = parse(with_change("steps.0.parallel", True)).steps[0]
    assert "parallel" not in step.model_dump()


def test_numbers_keep_their_values() -> None:
    body = with_change("context", {"big": 2**63 - 1, "ref": "12345678901234567890"})
    workflow, doc = parse_create_request(
        encode(body), check_url=check_url, check_condition=check_condition
    )
    assert workflow.context == {"big": 2**63 - 1, "ref": "12345678901234567890"}
    assert doc == body


def test_python_construction_uses_snake_case_names() -> None:
    workflow = WorkflowCreate(
        steps=[StepSpec(id="a", url="https://shop.example/a", depends_on=[])],
        on_complete="https://shop.example/done",
        fail_fast=False,
    )
    dumped = workflow.model_dump(by_alias=True)
    assert dumped["onComplete"] == "https://shop.example/done"
    assert dumped["failFast"] is False
    assert dumped["steps"][0]["retries"]["maxAttempts"] == 3


def test_ten_thousand_step_chain() -> None:
    steps = [
        {"id": f"s{i}", "url": "https://shop.example/run", "dependsOn": [f"s{i - 1}"] if i else []}
        for i in range(MAX_STEPS)
    ]
    raw = encode({"steps": steps})
    assert len(raw) <= MAX_BODY_BYTES
    calls: list[str] = []

    def counting_check_url(url: str) -> None:
        calls.append(url)

    workflow, _ = parse_create_request(
        raw, check_url=counting_check_url, check_condition=check_condition
    )
    assert len(workflow.steps) == MAX_STEPS
    assert calls == ["https://shop.example/run"], "one call per distinct URL"


def test_cycle_closing_a_ten_thousand_step_chain() -> None:
    steps = [
        {"id": f"s{i}", "url": "https://shop.example/run", "dependsOn": [f"s{i - 1}"] if i else []}
        for i in range(MAX_STEPS)
    ]
    steps[0]["dependsOn"] = [f"s{MAX_STEPS - 1}"]
    ((path, message),) = errors({"steps": steps})
    assert path == "steps"
    # Named by its ends and a count: one short line, not a 90 KB message.
    assert message == (
        "cycle of 10,000 steps: s0 -> s9999 -> s9998 -> s9997 -> s9996 -> "
        "… 9,991 more … -> s4 -> s3 -> s2 -> s1 -> s0"
    )


# ------------------------------------------------------------------- table of bad bodies

LONG_URL = "https://shop.example/" + "x" * 2028


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # No steps.
        ({"steps": []}, ["steps"]),
        ({}, ["steps"]),
        # Ids.
        (with_change("steps.0.id", ""), ["steps[0].id"]),
        (with_change("steps.0.id", "-a"), ["steps[0].id"]),
        (with_change("steps.0.id", "a b"), ["steps[0].id"]),
        (with_change("steps.0.id", "a\n"), ["steps[0].id"]),
        (with_change("steps.0.id", "é"), ["steps[0].id"]),
        (with_change("steps.0.id", "a/b"), ["steps[0].id"]),
        (with_change("steps.0.id", "a" * 129), ["steps[0].id"]),
        (with_change("id", "wf 1"), ["id"]),
        (with_change("steps.1", {"id": "a", "url": "https://shop.example/c"}), ["steps[1].id"]),
        # Dependencies.
        (with_change("steps.1.dependsOn", ["zz"]), ["steps[1].dependsOn[0]"]),
        (with_change("steps.1.dependsOn", ["a", "b"]), ["steps[1].dependsOn[1]"]),
        (with_change("steps.1.dependsOn", ["a", "a"]), ["steps[1].dependsOn"]),
        (with_change("steps.0.dependsOn", ["b"]), ["steps"]),
        # URLs.
        (with_change("steps.0.url", "ftp://shop.example/a"), ["steps[0].url"]),
        (with_change("steps.0.url", "shop.example/a"), ["steps[0].url"]),
        (with_change("steps.0.url", "http:///a"), ["steps[0].url"]),
        (with_change("steps.0.url", "http://"), ["steps[0].url"]),
        (with_change("steps.0.url", "https://shop.example/a b"), ["steps[0].url"]),
        (with_change("steps.0.url", " https://shop.example/a"), ["steps[0].url"]),
        (with_change("steps.0.url", "https://shop.example/\x07"), ["steps[0].url"]),
        (with_change("steps.0.url", "https://shop.example:99999/"), ["steps[0].url"]),
        (with_change("steps.0.url", "https://[::1/"), ["steps[0].url"]),
        (with_change("steps.0.url", LONG_URL), ["steps[0].url"]),
        (with_change("steps.0.url", "https://blocked.example/a"), ["steps[0].url"]),
        (with_change("steps.0.compensation", "mailto:x@shop.example"), ["steps[0].compensation"]),
        (with_change("steps.0.compensation", "http://10.0.0.1/undo"), ["steps[0].compensation"]),
        (with_change("onComplete", "file:///etc/passwd"), ["onComplete"]),
        (with_change("onError", "http://blocked.example/"), ["onError"]),
        # Conditions.
        (with_change("steps.0.when", "a ?? b"), ["steps[0].when"]),
        (with_change("steps.0.when", "x" * 4097), ["steps[0].when"]),
        # Ranges.
        (with_change("steps.0.retries.maxAttempts", 0), ["steps[0].retries.maxAttempts"]),
        (with_change("steps.0.retries.maxAttempts", 101), ["steps[0].retries.maxAttempts"]),
        (with_change("steps.0.retries.delay", -0.1), ["steps[0].retries.delay"]),
        (with_change("steps.0.retries.delay", 3600.5), ["steps[0].retries.delay"]),
        (with_change("steps.0.retries.maxDelay", -1), ["steps[0].retries.maxDelay"]),
        (with_change("steps.0.retries.maxDelay", 86401), ["steps[0].retries.maxDelay"]),
        (with_change("steps.0.retries.backoff", "random"), ["steps[0].retries.backoff"]),
        (with_change("steps.0.timeout", 0), ["steps[0].timeout"]),
        (with_change("steps.0.timeout", -5), ["steps[0].timeout"]),
        (with_change("steps.0.timeout", 86400.5), ["steps[0].timeout"]),
        (with_change("timeout", 0), ["timeout"]),
        (with_change("timeout", 2678401), ["timeout"]),
        (with_change("name", "n" * 201), ["name"]),
        # Types.
        (with_change("steps.0.retries.maxAttempts", "3"), ["steps[0].retries.maxAttempts"]),
        (with_change("steps.0.retries.maxAttempts", True), ["steps[0].retries.maxAttempts"]),
        (with_change("steps.0.retries.maxAttempts", None), ["steps[0].retries.maxAttempts"]),
        (with_change("steps.0.retries.jitter", 1), ["steps[0].retries.jitter"]),
        (with_change("steps.0.retries.jitter", "true"), ["steps[0].retries.jitter"]),
        (with_change("steps.0.retries.delay", "1"), ["steps[0].retries.delay"]),
        (with_change("steps.0.retries.delay", True), ["steps[0].retries.delay"]),
        (with_change("steps.0.retries.backoff", 1), ["steps[0].retries.backoff"]),
        (with_change("steps.0.retries", []), ["steps[0].retries"]),
        (with_change("steps.0.retries", None), ["steps[0].retries"]),
        (with_change("steps.0.retries", "exponential"), ["steps[0].retries"]),
        (with_change("steps.0.id", 5), ["steps[0].id"]),
        (with_change("steps.0.id", None), ["steps[0].id"]),
        (with_change("steps.0.url", ["https://shop.example/a"]), ["steps[0].url"]),
        (with_change("steps.0.url", None), ["steps[0].url"]),
        (with_change("steps.1.dependsOn", None), ["steps[1].dependsOn"]),
        (with_change("steps.1.dependsOn", "a"), ["steps[1].dependsOn"]),
        (with_change("steps.1.dependsOn", {"a": True}), ["steps[1].dependsOn"]),
        (with_change("steps.1.dependsOn", [1]), ["steps[1].dependsOn[0]"]),
        (with_change("steps.0.timeout", "300"), ["steps[0].timeout"]),
        (with_change("steps.0.timeout", None), ["steps[0].timeout"]),
        (with_change("steps.0.when", True), ["steps[0].when"]),
        (with_change("steps.0.compensation", 1), ["steps[0].compensation"]),
        (with_change("steps.0.continueOnFailure", 0), ["steps[0].continueOnFailure"]),
        (with_change("steps.0.parallel", "yes"), ["steps[0].parallel"]),
        (with_change("steps.0.parallel", 1), ["steps[0].parallel"]),
        (with_change("steps.0", "a"), ["steps[0]"]),
        (with_change("steps.0", None), ["steps[0]"]),
        ({"steps": {"a": {"url": "https://shop.example/a"}}}, ["steps"]),
        ({"steps": None}, ["steps"]),
        ({"steps": "a"}, ["steps"]),
        (with_change("id", 123), ["id"]),
        (with_change("name", ["n"]), ["name"]),
        (with_change("context", []), ["context"]),
        (with_change("context", None), ["context"]),
        (with_change("context", "{}"), ["context"]),
        (with_change("timeout", "86400"), ["timeout"]),
        (with_change("saga", 1), ["saga"]),
        (with_change("saga", None), ["saga"]),
        (with_change("failFast", "true"), ["failFast"]),
        (with_change("onComplete", {"url": "https://shop.example"}), ["onComplete"]),
        # Unknown fields, at every level, snake_case included.
        (with_change("dependOn", []), ["dependOn"]),
        (with_change("fail_fast", True), ["fail_fast"]),
        (with_change("steps.1.dependOn", ["a"]), ["steps[1].dependOn"]),
        (with_change("steps.1.depends_on", ["a"]), ["steps[1].depends_on"]),
        (with_change("steps.0.retries.max_attempts", 2), ["steps[0].retries.max_attempts"]),
        (with_change("steps.0.retries.attempts", 2), ["steps[0].retries.attempts"]),
    ],
)
def test_bad_body(body: dict[str, Any], expected: list[str]) -> None:
    assert paths(body) == expected


@pytest.mark.parametrize(
    ("body", "path", "message"),
    [
        ({"steps": []}, "steps", "a workflow needs at least one step"),
        ({}, "steps", "is required"),
        (
            with_change("steps.1", {"id": "a", "url": "https://shop.example/c"}),
            "steps[1].id",
            "duplicate step id 'a'",
        ),
        (with_change("steps.1.dependsOn", ["zz"]), "steps[1].dependsOn[0]", "unknown step 'zz'"),
        (
            with_change("steps.1.dependsOn", ["b"]),
            "steps[1].dependsOn[0]",
            "step 'b' depends on itself",
        ),
        (
            with_change("steps.1.dependsOn", ["a", "a"]),
            "steps[1].dependsOn",
            "lists 'a' more than once",
        ),
        (with_change("steps.0.dependsOn", ["b"]), "steps", "cycle: a -> b -> a"),
        (
            with_change("steps.0.retries.maxAttempts", "3"),
            "steps[0].retries.maxAttempts",
            "must be an integer, got string",
        ),
        (
            with_change("steps.0.retries.maxAttempts", 101),
            "steps[0].retries.maxAttempts",
            "must be at most 100",
        ),
        (with_change("steps.0.retries.delay", -1), "steps[0].retries.delay", "must be at least 0"),
        (with_change("steps.0.timeout", 0), "steps[0].timeout", "must be greater than 0"),
        (
            with_change("steps.0.retries.jitter", 1),
            "steps[0].retries.jitter",
            "must be true or false, got integer",
        ),
        (
            with_change("steps.0.retries.backoff", "random"),
            "steps[0].retries.backoff",
            "must be 'exponential', 'fixed' or 'linear', got 'random'",
        ),
        (
            with_change("steps.1.dependsOn", None),
            "steps[1].dependsOn",
            "must be an array, got null",
        ),
        (with_change("context", []), "context", "must be an object, got array"),
        (with_change("steps.0.retries", None), "steps[0].retries", "must be an object, got null"),
        (with_change("steps.0.timeout", "300"), "steps[0].timeout", "must be a number, got string"),
        (
            with_change("steps.1.dependOn", ["a"]),
            "steps[1].dependOn",
            "unknown field; did you mean 'dependsOn'?",
        ),
        (
            with_change("steps.0.retries.max_attempts", 2),
            "steps[0].retries.max_attempts",
            "unknown field; did you mean 'maxAttempts'?",
        ),
        (
            with_change("steps.0.id", "a b"),
            "steps[0].id",
            "must be 1 to 128 characters (letters, digits, '_', '.', ':', '-'), "
            "starting with a letter or digit",
        ),
        (with_change("name", "n" * 201), "name", "must be at most 200 characters, got 201"),
        (with_change("steps.0.url", "ftp://x"), "steps[0].url", "must be an http or https URL"),
        (with_change("steps.0.url", "http:///a"), "steps[0].url", "must include a host"),
        (
            with_change("steps.0.url", "http://a b"),
            "steps[0].url",
            "must not contain whitespace or control characters",
        ),
        (
            with_change("steps.0.url", "https://blocked.example/"),
            "steps[0].url",
            "resolves to a private address",
        ),
        (with_change("steps.0.when", "a ?? b"), "steps[0].when", "unexpected '?' at column 3"),
    ],
)
def test_messages(body: dict[str, Any], path: str, message: str) -> None:
    assert errors(body) == [(path, message)]


def test_messages_never_point_at_pydantic_docs() -> None:
    body = with_change("steps.0.retries", {"maxAttempts": "x", "delay": None, "extra": 1})
    for _, message in errors(body):
        assert "pydantic" not in message
        assert "http" not in message


def test_unknown_field_in_context_is_fine() -> None:
    assert parse(with_change("context", {"dependOn": 1, "max_attempts": "x"})).context


# -------------------------------------------------------------- every problem at once


def test_three_problems_give_three_entries() -> None:
    body = base()
    body["steps"][0]["retries"] = {"maxAttempts": "3"}
    body["steps"][1]["url"] = "ftp://shop.example/b"
    body["saga"] = 1
    assert sorted(paths(body)) == ["saga", "steps[0].retries.maxAttempts", "steps[1].url"]


def test_cross_field_problems_are_reported_together() -> None:
    body = {
        "steps": [
            {"id": "a", "url": "https://blocked.example/a", "dependsOn": ["b", "zz"]},
            {"id": "b", "url": "https://shop.example/b", "dependsOn": ["a"], "when": "??"},
            {"id": "a", "url": "https://shop.example/c", "compensation": "http://10.0.0.1"},
        ],
        "onComplete": "https://blocked.example/done",
    }
    assert errors(body) == [
        ("steps[2].id", "duplicate step id 'a'"),
        ("steps[0].dependsOn[1]", "unknown step 'zz'"),
        ("steps", "cycle: a -> b -> a"),
        ("steps[0].url", "resolves to a private address"),
        ("steps[1].when", "unexpected '?' at column 1"),
        ("steps[2].compensation", "resolves to a private address"),
        ("onComplete", "resolves to a private address"),
    ]


def test_cross_field_rules_wait_for_a_valid_shape() -> None:
    calls: list[str] = []

    def recording_check_url(url: str) -> None:
        calls.append(url)

    body = with_change("steps.1.id", "a")
    body["saga"] = "no"
    with pytest.raises(ValidationFailed) as caught:
        parse_create_request(
            encode(body), check_url=recording_check_url, check_condition=check_condition
        )
    assert [e.path for e in caught.value.errors] == ["saga"]
    assert calls == []


def test_each_url_and_condition_is_checked_once() -> None:
    urls: list[str] = []
    conditions: list[str] = []
    body = {
        "steps": [
            {"id": f"s{i}", "url": "https://shop.example/x", "when": "true"} for i in range(50)
        ],
        "onComplete": "https://shop.example/x",
    }
    parse_create_request(encode(body), check_url=urls.append, check_condition=conditions.append)
    assert urls == ["https://shop.example/x"]
    assert conditions == ["true"]


def test_a_refused_url_is_reported_everywhere_it_is_used() -> None:
    body = {
        "steps": [{"id": f"s{i}", "url": "http://blocked.example/"} for i in range(3)],
        "onError": "http://blocked.example/",
    }
    assert paths(body) == ["steps[0].url", "steps[1].url", "steps[2].url", "onError"]


def test_condition_errors_of_any_class_are_reported() -> None:
    def failing(expression: str) -> None:
        raise KeyError(expression)

    with pytest.raises(ValidationFailed) as caught:
        parse_create_request(
            encode(with_change("steps.0.when", "x")), check_url=check_url, check_condition=failing
        )
    assert caught.value.errors == [FieldError("steps[0].when", "'x'")]


def test_empty_refusals_still_say_something() -> None:
    def refuse_url(url: str) -> None:
        raise ValueError

    def refuse_condition(expression: str) -> None:
        raise ConditionSyntaxError

    with pytest.raises(ValidationFailed) as caught:
        parse_create_request(
            encode(with_change("steps.0.when", "x")),
            check_url=refuse_url,
            check_condition=refuse_condition,
        )
    assert all(e.message for e in caught.value.errors)
    assert len(caught.value.errors) == 3


def test_reported_problems_are_capped() -> None:
    body = {"steps": [{"id": f"s{i}", "url": f"ftp://shop.example/{i}"} for i in range(1500)]}
    failure = problem(body)
    assert isinstance(failure, ValidationFailed)
    assert len(failure.errors) == 1000
    assert "more than 1000 problems" in failure.detail


def test_unstorable_values_are_capped_too() -> None:
    raw = b'{"context": [' + b", ".join([b'"\\u0000"'] * 5000) + b"]}"
    failure = problem(raw)
    assert isinstance(failure, ValidationFailed)
    assert len(failure.errors) == 1000
    assert failure.errors[0] == FieldError(
        "context[0]", "must not contain NUL characters (\\u0000)"
    )
    assert "more than 1000 problems" in failure.detail


# ---------------------------------------------------------------------------- limits


def test_too_many_steps() -> None:
    steps = [{"id": f"s{i}", "url": "http://shop.example"} for i in range(MAX_STEPS + 1)]
    assert errors({"steps": steps, "timeout": 0}) == [
        ("steps", "at most 10000 steps are allowed, got 10001"),
        ("timeout", "must be greater than 0"),
    ]


def test_too_many_steps_are_refused_without_looking_at_them() -> None:
    # Not even steps: each is refused only as part of the list.
    steps = [None] * (MAX_STEPS + 1)
    assert paths({"steps": steps}) == ["steps"]


def test_body_over_the_limit() -> None:
    raw = encode({"steps": [], "context": {"pad": "x" * MAX_BODY_BYTES}})
    with pytest.raises(PayloadTooLarge) as caught:
        parse(raw)
    assert caught.value.status == 413
    with pytest.raises(PayloadTooLarge):
        parse_json_body(raw)


def test_body_at_the_limit() -> None:
    body = base()
    body["context"] = {"pad": ""}
    padding = MAX_BODY_BYTES - len(encode(body))
    body["context"] = {"pad": "x" * padding}
    raw = encode(body)
    assert len(raw) == MAX_BODY_BYTES
    assert parse(raw).context["pad"] == "x" * padding


# ------------------------------------------------------------- not JSON at all: 400


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        (b"", "empty"),
        (b"  \n\t ", "empty"),
        (b'{"steps": [}', "line 1, column 12"),
        (b'{\n  "steps":\n    tru\n}', "line 3, column 5"),
        (b'{"steps": []} trailing', "line 1, column 15"),
        (b'{"a": "\xff"}', "not valid UTF-8 (byte 7, line 1, column 8)"),
        (b'{\n"a": "\xed\xa0\x80"}', "not valid UTF-8 (byte 8, line 2, column 7)"),
        (b'\xef\xbb\xbf{"steps": []}', "not valid JSON"),
        (b'{"timeout": NaN}', "NaN is not a JSON number (line 1, column 13)."),
        (b'{"timeout": Infinity}', "Infinity is not a JSON number (line 1, column 13)."),
        (b'{"timeout": -Infinity}', "-Infinity is not a JSON number (line 1, column 14)."),
        (b'{"timeout": 1e400, "context": NaN}', "NaN is not a JSON number."),
        (b'{"a": "\\ud800"}', "not valid JSON"),
        (b'{"a": 1e400, "b": "\\udc00x"}', "unpaired surrogate"),
        (b'{"a": "\x01"}', "not valid JSON"),
        (b"{'steps': []}", "not valid JSON"),
        (b'{"steps": [],}', "not valid JSON"),
        (b"\x00", "not valid JSON"),
        (b"\xff\xfe{\x00}\x00", "not valid UTF-8"),
    ],
)
def test_not_json(raw: bytes, detail: str) -> None:
    failure = problem(raw)
    assert isinstance(failure, BadRequest)
    assert failure.status == 400
    assert detail in failure.detail
    with pytest.raises(BadRequest):
        parse_json_body(raw)


def nested(depth: int, kind: str) -> bytes:
    """A body whose context reaches ``depth`` levels (the top-level object is level 1)."""
    inner = depth - 2
    opening, closing = ("[", "]") if kind == "array" else ('{"k":', "}")
    value = opening * inner + ("" if kind == "array" else "1") + closing * inner
    return (
        f'{{"steps": [{{"id": "a", "url": "http://x.io"}}], "context": {{"v": {value}}}}}'.encode()
    )


@pytest.mark.parametrize("kind", ["array", "object"])
def test_nesting_at_the_limit(kind: str) -> None:
    parse(nested(MAX_DEPTH, kind))


@pytest.mark.parametrize("kind", ["array", "object"])
@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 900, 1100, 100_000])
def test_nesting_too_deep(kind: str, depth: int) -> None:
    failure = problem(nested(depth, kind))
    assert isinstance(failure, BadRequest)
    assert "nested deeper than 64 levels" in failure.detail


def test_nesting_too_deep_with_an_overflowing_number() -> None:
    # Takes the precise path, which checks depth on its own.
    raw = b'{"a": 1e400, "b": ' + b"[" * 100 + b"]" * 100 + b"}"
    with pytest.raises(BadRequest, match="nested deeper"):
        parse_json_body(raw)


def test_nesting_too_deep_with_a_long_number() -> None:
    raw = b'{"a": 12345678901234567890, "b": ' + b"[" * 500 + b"]" * 500 + b"}"
    with pytest.raises(BadRequest, match="nested deeper"):
        parse_json_body(raw)


# ---------------------------------------------------------- JSON that cannot be stored


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (with_change("context", {"note": "a\x00b"}), ["context.note"]),
        (with_change("context", {"a\x00": 1}), ['context["a\\u0000"]']),
        (with_change("context", {"list": ["ok", ["\x00"]]}), ["context.list[1][0]"]),
        (with_change("context", {"order id": "\x00"}), ['context["order id"]']),
        (with_change("name", "\x00"), ["name"]),
        (with_change("steps.0.when", "x\x00"), ["steps[0].when"]),
        (with_change("steps.0.id", "a\x00"), ["steps[0].id"]),
        (with_change("context", {"n": 2**63}), ["context.n"]),
        (with_change("context", {"n": 2**64 - 1}), ["context.n"]),
        (with_change("context", {"n": 2**64}), ["context.n"]),
        (with_change("context", {"n": -(2**63) - 1}), ["context.n"]),
        (with_change("context", {"n": [10**30]}), ["context.n[0]"]),
        (with_change("steps.0.retries.maxAttempts", 2**64), ["steps[0].retries.maxAttempts"]),
        (with_change("context", {"f": 1e400}), ["context.f"]),
        (with_change("context", {"f": -1e400}), ["context.f"]),
        (with_change("timeout", 1e400), ["timeout"]),
    ],
)
def test_unstorable_values(body: Any, expected: list[str]) -> None:
    raw = encode(body).replace(b"1e+400", b"1e400").replace(b"Infinity", b"1e400")
    assert paths(raw) == expected


def test_integer_with_thousands_of_digits() -> None:
    # Far past the 4300 digits that int() refuses to convert.
    raw = encode(with_change("context", {"n": 0})).replace(b'"n": 0', b'"n": -' + b"9" * 5000)
    assert errors(raw) == [("context.n", "integer is outside the signed 64-bit range")]


def test_unstorable_messages() -> None:
    body = with_change("context", {"s": "\x00", "k\x00": 0, "i": 2**64, "f": 1e400})
    raw = encode(body).replace(b"Infinity", b"1e400")
    assert errors(raw) == [
        ("context.s", "must not contain NUL characters (\\u0000)"),
        ('context["k\\u0000"]', "key must not contain NUL characters (\\u0000)"),
        ("context.i", "integer is outside the signed 64-bit range"),
        ("context.f", "number is too large (it overflows a 64-bit float)"),
    ]


def test_unstorable_values_and_other_problems_together() -> None:
    body = with_change("context", {"s": "\x00"})
    body["saga"] = "yes"
    assert paths(body) == ["context.s", "saga"]


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        (b'"\\u0000"', ""),
        (b"[1, 9223372036854775808]", "[1]"),
        (b"18446744073709551616", ""),
        (b"1e400", ""),
        (b'{"a": {"": "\\u0000"}}', 'a[""]'),
    ],
)
def test_parse_json_body_reports_paths(raw: bytes, path: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_json_body(raw)
    assert [e.path for e in caught.value.errors] == [path]


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (b"[]", []),
        (b'{"a": [1, 2.5, null, true, "\\u00e9"]}', {"a": [1, 2.5, None, True, "é"]}),
        (b"9223372036854775807", 2**63 - 1),
        (b"-9223372036854775808", -(2**63)),
        (b'{"id": "12345678901234567890123456"}', {"id": "12345678901234567890123456"}),
        (b"0.1234567890123456789012", 0.1234567890123456789012),
        (b'"\\\\u0000"', "\\u0000"),
        (b'"\\ud83d\\ude00"', "\U0001f600"),
    ],
)
def test_parse_json_body_returns_the_document(raw: bytes, value: Any) -> None:
    assert parse_json_body(raw) == value


# ------------------------------------------------------------------- top-level shape


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (b"[]", "array"),
        (b'[{"steps": []}]', "array"),
        (b'"steps"', "string"),
        (b"42", "integer"),
        (b"4.2", "number"),
        (b"null", "null"),
        (b"true", "boolean"),
    ],
)
def test_top_level_must_be_an_object(raw: bytes, kind: str) -> None:
    assert errors(raw) == [("", f"must be a JSON object, got {kind}")]


# ---------------------------------------------------------------------- canonical json


def test_canonical_json_ignores_key_order_and_spacing() -> None:
    first = parse_json_body(b'{"b": 1, "a": {"y": [1, 2], "x": "\xc3\xa9"}}')
    second = parse_json_body(b'{"a":{"x":"\\u00e9","y":[1,2]},\n "b":1}')
    assert canonical_json(first) == canonical_json(second)
    assert canonical_json(first) == '{"a":{"x":"é","y":[1,2]},"b":1}'.encode()


def test_canonical_json_tells_different_documents_apart() -> None:
    assert canonical_json({"a": [1, 2]}) != canonical_json({"a": [2, 1]})


# ------------------------------------------------------------------------ properties

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text()
    | st.sampled_from(["\x00", "\ud800", "a\udc00", "https://shop.example/a", "a"]),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(
            st.text(max_size=8) | st.sampled_from(["steps", "id", "url", "dependsOn", "retries"]),
            children,
            max_size=5,
        )
    ),
    max_leaves=30,
)


def assert_4xx_or_model(raw: bytes) -> None:
    try:
        workflow, _ = parse_create_request(
            raw, check_url=check_url, check_condition=check_condition
        )
    except (BadRequest, ValidationFailed, PayloadTooLarge) as exc:
        assert 400 <= exc.status < 500
        if isinstance(exc, ValidationFailed):
            assert exc.errors
    else:
        assert isinstance(workflow, WorkflowCreate)


@given(json_values)
def test_any_json_value_gets_a_model_or_a_4xx(value: Any) -> None:
    assert_4xx_or_model(encode(value))


@given(st.binary(max_size=200))
def test_any_bytes_get_a_model_or_a_4xx(raw: bytes) -> None:
    assert_4xx_or_model(raw)


def locations(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place inside ``value`` (as a key path), containers included."""
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found.extend(locations(child, (*prefix, key)))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found.extend(locations(child, (*prefix, index)))
    return found


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.data())
def test_mutations_of_a_valid_body_get_a_model_or_a_4xx(data: st.DataObject) -> None:
    body = json.loads(DESIGN_EXAMPLE)
    for _ in range(data.draw(st.integers(1, 3))):
        where = data.draw(st.sampled_from(locations(body)))
        action = data.draw(st.sampled_from(["replace", "delete", "add"]))
        if not where:
            if action == "replace":
                body = data.draw(json_values)
            continue
        parent = body
        for key in where[:-1]:
            parent = parent[key]
        last = where[-1]
        if action == "replace":
            parent[last] = data.draw(json_values)
        elif action == "delete":
            del parent[last]
        elif isinstance(parent[last], dict):
            parent[last][data.draw(st.text(max_size=10))] = data.draw(json_values)
        elif isinstance(parent[last], list):
            parent[last].append(data.draw(json_values))
    assert_4xx_or_model(encode(body))


@st.composite
def workflows(draw: st.DrawFn) -> dict[str, Any]:
    """A valid body: a random DAG of steps, declared in a topological order."""
    count = draw(st.integers(1, 20))
    steps = []
    for i in range(count):
        deps = draw(st.lists(st.integers(0, i - 1), unique=True)) if i else []
        steps.append(
            {
                "id": f"s{i}",
                "url": f"https://shop.example/{i}",
                "dependsOn": [f"s{d}" for d in deps],
            }
        )
    return {"steps": steps}


@given(workflows())
def test_random_dags_are_accepted(body: dict[str, Any]) -> None:
    workflow = parse(body)
    assert [s.id for s in workflow.steps] == [s["id"] for s in body["steps"]]


@given(workflows(), st.data())
def test_a_back_edge_is_reported_as_a_cycle(body: dict[str, Any], data: st.DataObject) -> None:
    steps = body["steps"]
    # Add an edge from an ancestor to its descendant (or a step to itself).
    edges = [(i, d) for i, step in enumerate(steps) for d in step["dependsOn"]]
    if not edges:
        return
    later, earlier = data.draw(st.sampled_from(edges))
    mutated = copy.deepcopy(body)
    mutated["steps"][int(earlier[1:])]["dependsOn"].append(f"s{later}")
    ((path, message),) = errors(mutated)
    assert path == "steps"
    assert message.startswith("cycle: ")
    cycle = message.removeprefix("cycle: ").split(" -> ")
    assert cycle[0] == cycle[-1]
    deps = {s["id"]: s["dependsOn"] for s in mutated["steps"]}
    for node, dep in pairwise(cycle):
        assert dep in deps[node]


# ------------------------------------------------------------------------ callbacks


@pytest.mark.parametrize(
    "body",
    [
        {"success": True},
        {"success": True, "result": {"pages": 12}},
        {"success": False, "error": "renderer crashed", "retry": False},
        # Read like a step answer: errors need not be strings.
        {"success": False, "error": {"reason": "x"}},
    ],
)
def test_a_callback_body_is_an_object_with_a_boolean_success(body: dict[str, Any]) -> None:
    assert parse_callback_request(json.dumps(body).encode()).success is body["success"]


@pytest.mark.parametrize(
    ("body", "path", "message"),
    [
        ({"result": 1}, "success", "is required"),
        ({"success": "yes"}, "success", "must be true or false, got string"),
        ({"success": 1}, "success", "must be true or false, got integer"),
        ([True], "", "must be a JSON object, got array"),
        # Unknown fields are refused as in a create: a misspelt one would be lost.
        ({"success": True, "results": 1}, "results", "unknown field; did you mean 'result'?"),
        (
            {"success": True, "trace": "abc"},
            "trace",
            "unknown field (expected one of success, result, error, retry)",
        ),
    ],
)
def test_a_callback_body_without_a_boolean_success_is_a_422(
    body: Any, path: str, message: str
) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_callback_request(json.dumps(body).encode())
    assert caught.value.errors == [FieldError(path, message)]


def test_a_callback_body_that_is_not_json_is_a_400() -> None:
    with pytest.raises(BadRequest):
        parse_callback_request(b"{")


# ------------------------------------------------------------------- repeated keys


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"id": "a", "id": "b", "steps": []}', ["id"]),
        (b'{"a": {"x": 1, "y": [{"k": 1, "k": 2, "k": 3}]}}', ["a.y[0].k"]),
        (b'{"a": 1, "b": {"a": 1, "a": 1}, "a": 2}', ["a", "b.a"]),
        (b'{"order id": 1, "order id": 1}', ['["order id"]']),
        # The slow paths find them too: a big integer, a colon written as an escape.
        (b'{"n": 123456789012345678901234, "n": 1}', ["n"]),
        (b'{"a\\u003a": 1, "a:": 2}', ['["a:"]']),
        (b'{"a": "x", "a": "\\u0000"}', ["a"]),
    ],
)
def test_a_repeated_key_is_refused_with_its_path(raw: bytes, expected: list[str]) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_json_body(raw)
    repeated = [e.path for e in caught.value.errors if "repeated" in e.message]
    assert repeated == expected


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a": "x:y", "b": {"c": ":", "d": [":::"]}, "e": 1}',
        b'{"a\\u003a": 1, "a": 2}',
        b'{"k": "\\\\u003a", "l": ":"}',
        b'[{"a": 1}, {"a": 1}]',
    ],
)
def test_colons_in_strings_are_not_repeated_keys(raw: bytes) -> None:
    assert parse_json_body(raw) == json.loads(raw)


def test_a_repeated_key_in_a_create_is_a_422_with_the_other_problems() -> None:
    raw = b'{"id": "a", "steps": [{"id": "s", "url": "https://shop.example/s", "id": "t"}], '
    raw += b'"id": "b", "saga": "yes"}'
    assert errors(raw) == [
        ("id", "this key is repeated in its object; a key may appear once"),
        ("steps[0].id", "this key is repeated in its object; a key may appear once"),
        ("saga", "must be true or false, got string"),
    ]


def test_a_repeated_key_in_callbacks_and_cancels_is_a_422() -> None:
    for parse_body in (parse_callback_request, parse_cancel_request):
        with pytest.raises(ValidationFailed) as caught:
            parse_body(b'{"success": true, "compensate": true, "success": false}')
        assert caught.value.errors[0].path == "success"


# ------------------------------------------------------------------- integral floats


def test_an_integral_float_is_an_integer() -> None:
    workflow = parse(with_change("steps.0.retries", {"maxAttempts": 3.0}))
    assert workflow.steps[0].retries.max_attempts == 3
    assert type(workflow.steps[0].retries.max_attempts) is int


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (3.5, "must be an integer, got number"),
        (True, "must be an integer, got boolean"),
        ("3", "must be an integer, got string"),
        (300.0, "must be at most 100"),
    ],
)
def test_only_integral_numbers_are_integers(value: Any, message: str) -> None:
    assert errors(with_change("steps.0.retries", {"maxAttempts": value})) == [
        ("steps[0].retries.maxAttempts", message)
    ]
