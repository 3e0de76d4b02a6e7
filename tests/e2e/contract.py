"""Shapes from DESIGN.md and assertions that check what the handler and the API saw."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook

#: DESIGN §4: exactly the fields of a step request body.
STEP_BODY_FIELDS = frozenset(
    {
        "workflowId",
        "workflowName",
        "stepId",
        "attempt",
        "kind",
        "context",
        "previousSteps",
        "deadline",
        "callbackUrl",
    }
)
#: DESIGN §4: what an onComplete / onError request carries.
CALLBACK_BODY_FIELDS = frozenset(
    {
        "workflowId",
        "workflowName",
        "status",
        "context",
        "results",
        "completedSteps",
        "failedSteps",
        "skippedSteps",
        "error",
        "completedAt",
    }
)
#: DESIGN §3: the status document and each of its steps.
WORKFLOW_FIELDS = frozenset(
    {
        "id",
        "name",
        "status",
        "context",
        "saga",
        "failFast",
        "timeout",
        "onComplete",
        "onError",
        "createdAt",
        "startedAt",
        "completedAt",
        "currentSteps",
        "completedSteps",
        "failedSteps",
        "skippedSteps",
        "results",
        "error",
        "steps",
    }
)
STEP_FIELDS = frozenset(
    {
        "id",
        "url",
        "dependsOn",
        "status",
        "attempts",
        "maxAttempts",
        "startedAt",
        "completedAt",
        "result",
        "error",
        "compensation",
        "compensationStatus",
    }
)
EVENT_FIELDS = frozenset({"id", "type", "workflowId", "stepId", "at", "data"})
SIGNED_HEADERS = (
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "baton-workflow-id",
    "baton-attempt",
    "baton-kind",
    "user-agent",
)
USER_AGENT = re.compile(r"^Baton/\d[\w.+-]*$")


def unique_id(prefix: str) -> str:
    """A workflow id (or name) no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def parse_utc(value: str) -> datetime:
    """Parse an ISO 8601 time and check that it is UTC."""
    assert isinstance(value, str), f"not an ISO 8601 string: {value!r}"
    parsed = datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, f"no time zone in {value!r}"
    assert parsed.utcoffset() == timedelta(0), f"not UTC: {value!r}"
    return parsed.astimezone(UTC)


def assert_signed(
    record: dict[str, Any],
    secret: str,
    *,
    kind: str,
    workflow_id: str,
    attempt: int | None = None,
) -> dict[str, str]:
    """The request carries every Baton and Standard Webhooks header and verifies."""
    headers = record["headers"]
    missing = [name for name in SIGNED_HEADERS if not headers.get(name)]
    assert not missing, f"missing headers {missing} in {headers}"
    assert record["verified"], record["verify_error"]
    # Verified again here, independently of the handler process.
    Webhook(secret).verify(record["body"], headers)
    assert headers["webhook-timestamp"].isdigit(), headers["webhook-timestamp"]
    assert USER_AGENT.match(headers["user-agent"]), headers["user-agent"]
    assert headers["baton-kind"] == kind
    assert headers["baton-workflow-id"] == workflow_id
    if attempt is not None:
        assert headers["baton-attempt"] == str(attempt)
    assert headers.get("content-type", "").startswith("application/json"), headers
    return headers


def assert_step_request(
    record: dict[str, Any],
    secret: str,
    *,
    workflow_id: str,
    step_id: str,
    public_url: str,
    attempt: int = 1,
    kind: str = "step",
    workflow_name: str | None = None,
    context: Any = None,
) -> dict[str, Any]:
    """A signed step request with exactly the DESIGN §4 body; returns the body."""
    headers = assert_signed(record, secret, kind=kind, workflow_id=workflow_id, attempt=attempt)
    assert headers.get("baton-step-id") == step_id
    body = record["json"]
    assert isinstance(body, dict), record["body"]
    assert set(body) == STEP_BODY_FIELDS, sorted(body)
    assert body["workflowId"] == workflow_id
    assert body["workflowName"] == workflow_name
    assert body["stepId"] == step_id
    assert body["attempt"] == attempt
    assert body["kind"] == kind
    assert body["context"] == context
    assert isinstance(body["previousSteps"], dict)
    received = datetime.fromtimestamp(record["received_at"], UTC)
    assert parse_utc(body["deadline"]) > received
    assert body["callbackUrl"].startswith(f"{public_url}/v1/callbacks/"), body["callbackUrl"]
    return body


def assert_callback_request(
    record: dict[str, Any],
    secret: str,
    *,
    workflow_id: str,
    kind: str,
    status: str,
    attempt: int = 1,
) -> dict[str, Any]:
    """A signed onComplete / onError request with the DESIGN §4 fields; returns the body."""
    assert_signed(record, secret, kind=kind, workflow_id=workflow_id, attempt=attempt)
    body = record["json"]
    assert isinstance(body, dict), record["body"]
    assert set(body) >= CALLBACK_BODY_FIELDS, sorted(CALLBACK_BODY_FIELDS - set(body))
    assert body["workflowId"] == workflow_id
    assert body["status"] == status
    parse_utc(body["completedAt"])
    return body


def assert_status_document(document: dict[str, Any]) -> None:
    """Every documented field is there and every time is ISO 8601 UTC."""
    assert set(document) >= WORKFLOW_FIELDS, sorted(WORKFLOW_FIELDS - set(document))
    for field in ("createdAt", "startedAt", "completedAt"):
        if document[field] is not None:
            parse_utc(document[field])
    for step in document["steps"]:
        assert set(step) >= STEP_FIELDS, sorted(STEP_FIELDS - set(step))
        for field in ("startedAt", "completedAt"):
            if step[field] is not None:
                parse_utc(step[field])


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """An RFC 9457 problem document with the given status; returns it."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    problem = response.json()
    assert problem["status"] == status
    assert isinstance(problem["title"], str)
    return problem


def steps_by_id(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step["id"]: step for step in document["steps"]}
