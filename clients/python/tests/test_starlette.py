"""The user-side Starlette helpers (`baton.starlette`) and the example order app built on them."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fakes import STEP_BODY
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import baton
from baton.signing import (
    InvalidSecret,
    MissingHeaders,
    NoMatchingSignature,
    Signer,
    generate_secret,
)
from baton.starlette import StepFailed, StepRequest, step_endpoint, verify_request

SECRET = generate_secret()
OTHER_SECRET = generate_secret()


def signed(
    body: dict[str, Any] | bytes,
    *,
    secrets: list[str] | None = None,
    msg_id: str = "msg_1",
    timestamp: int | None = None,
) -> tuple[bytes, dict[str, str]]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    when = int(time.time()) if timestamp is None else timestamp
    headers = Signer(secrets or [SECRET]).headers(msg_id, when, raw)
    return raw, {**headers, "content-type": "application/json"}


async def post(
    app: Starlette, body: dict[str, Any] | bytes, path: str = "/step", **signing: Any
) -> httpx.Response:
    raw, headers = signed(body, **signing)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://handler"
    ) as client:
        return await client.post(path, content=raw, headers=headers)


def app_for(func: Callable[[StepRequest], Any], **options: Any) -> Starlette:
    options.setdefault("secrets", [SECRET])
    return Starlette(routes=[Route("/step", step_endpoint(func, **options), methods=["POST"])])


def sync_total(step: StepRequest) -> dict[str, Any]:
    return {"seen": step.result_of("validate")["total"], "thread": threading.get_ident()}


async def async_total(step: StepRequest) -> dict[str, Any]:
    return {"seen": step.result_of("validate")["total"], "thread": threading.get_ident()}


class CallableWithAsyncCall:
    async def __call__(self, step: StepRequest) -> dict[str, Any]:
        return {"seen": step.result_of("validate")["total"], "thread": threading.get_ident()}


# --- success ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("func", "in_loop_thread"),
    [(sync_total, False), (async_total, True), (CallableWithAsyncCall(), True)],
    ids=["sync", "async", "async-callable"],
)
async def test_success_envelope(func: Callable[[StepRequest], Any], in_loop_thread: bool) -> None:
    response = await post(app_for(func), STEP_BODY)
    assert response.status_code == 200
    answer = response.json()
    assert answer["success"] is True
    assert answer["result"]["seen"] == 4200
    # Plain functions may block, so they must not run on the event loop's thread.
    assert (answer["result"]["thread"] == threading.get_ident()) is in_loop_thread


async def test_step_request_fields() -> None:
    seen: list[StepRequest] = []

    def capture(step: StepRequest) -> None:
        seen.append(step)

    response = await post(app_for(capture), STEP_BODY, msg_id="msg_abc")
    assert response.json() == {"success": True, "result": None}
    (step,) = seen
    assert step.workflow_id == "order-123"
    assert step.workflow_name == "order-processing"
    assert step.step_id == "charge"
    assert step.attempt == 2
    assert step.kind == "step"
    assert step.context == {"orderId": "order_123"}
    assert step.previous_steps == STEP_BODY["previousSteps"]
    assert step.deadline == datetime(2026, 11, 21, 10, 0, 5, tzinfo=UTC)
    assert step.callback_url == "http://127.0.0.1:8000/v1/callbacks/tok"
    assert step.compensating is None
    assert step.raw == STEP_BODY
    assert step.message_id == "msg_abc"
    with pytest.raises(AttributeError):
        step.attempt = 3  # type: ignore[misc]


async def test_compensation_request() -> None:
    seen: list[StepRequest] = []
    body = {
        **STEP_BODY,
        "kind": "compensation",
        "compensating": {"stepId": "charge", "result": {"chargeId": "ch_1"}},
    }
    response = await post(app_for(seen.append), body)
    assert response.json()["success"] is True
    assert seen[0].kind == "compensation"
    assert seen[0].compensating == {"stepId": "charge", "result": {"chargeId": "ch_1"}}


def test_from_body_defaults_and_result_of() -> None:
    step = StepRequest.from_body(
        {"workflowId": "wf_1", "previousSteps": {"a": {"status": "skipped"}}, "deadline": "soon"}
    )
    assert (step.attempt, step.kind, step.context, step.deadline) == (1, "step", {}, None)
    assert step.schedule is None
    assert step.result_of("a") is None
    with pytest.raises(KeyError):
        step.result_of("b")


def test_the_schedule_of_a_fired_workflow() -> None:
    tick = {"id": "nightly", "scheduledAt": "2026-11-22T02:00:00.000Z"}
    step = StepRequest.from_body({"workflowId": "nightly-20261122T020000Z", "schedule": tick})
    assert step.schedule == tick


async def test_a_returned_response_is_sent_as_is() -> None:
    def start(step: StepRequest) -> Response:
        return JSONResponse({"async": True}, status_code=202)

    response = await post(app_for(start), STEP_BODY)
    assert (response.status_code, response.json()) == (202, {"async": True})


def test_route_is_named_after_the_function() -> None:
    route = Route("/step", step_endpoint(async_total, secrets=SECRET), methods=["POST"])
    assert route.name == "async_total"


# --- failures ---------------------------------------------------------------------------


@pytest.mark.parametrize("retry", [True, False])
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_step_failed(retry: bool, is_async: bool) -> None:
    def fail(step: StepRequest) -> None:
        raise StepFailed("card declined", retry=retry)

    async def fail_async(step: StepRequest) -> None:
        fail(step)

    response = await post(app_for(fail_async if is_async else fail), STEP_BODY)
    assert response.status_code == 200
    assert response.json() == {"success": False, "error": "card declined", "retry": retry}


def test_step_failed_retries_by_default() -> None:
    assert StepFailed("flaky").retry is True
    assert StepFailed("bad input", False).retry is False


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_exception_answers_500(is_async: bool, caplog: pytest.LogCaptureFixture) -> None:
    def boom(step: StepRequest) -> None:
        raise KeyError("sku")

    async def boom_async(step: StepRequest) -> None:
        boom(step)

    with caplog.at_level(logging.ERROR, logger="baton.starlette"):
        response = await post(app_for(boom_async if is_async else boom), STEP_BODY)
    assert response.status_code == 500
    assert response.json() == {"success": False, "error": "KeyError: 'sku'"}
    assert "order-123" in caplog.text
    assert "KeyError" in caplog.text


async def test_a_result_json_cannot_encode_answers_500() -> None:
    response = await post(app_for(lambda step: {"when": datetime.now(tz=UTC)}), STEP_BODY)
    assert response.status_code == 500
    assert response.json()["error"].startswith("TypeError: ")


# --- refused requests -------------------------------------------------------------------


def _wrong_secret() -> dict[str, Any]:
    return {"secrets": [OTHER_SECRET]}


def _stale() -> dict[str, Any]:
    return {"timestamp": int(time.time()) - 3600}


@pytest.mark.parametrize(
    ("signing", "message"),
    [
        (_wrong_secret(), "no v1 signature matches"),
        (_stale(), "in the past"),
    ],
    ids=["wrong-secret", "stale"],
)
async def test_bad_signature_answers_401_without_calling(
    signing: dict[str, Any], message: str
) -> None:
    called: list[StepRequest] = []
    response = await post(app_for(called.append), STEP_BODY, **signing)
    assert response.status_code == 401
    assert message in response.json()["error"]
    assert called == []


async def test_missing_signature_answers_401() -> None:
    called: list[StepRequest] = []
    app = app_for(called.append)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://handler"
    ) as client:
        response = await client.post("/step", json=STEP_BODY)
    assert response.status_code == 401
    assert "missing headers" in response.json()["error"]
    assert called == []


async def test_tampered_body_answers_401() -> None:
    raw, headers = signed(STEP_BODY)
    app = app_for(lambda step: None)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://handler"
    ) as client:
        response = await client.post("/step", content=raw.replace(b"4200", b"1"), headers=headers)
    assert response.status_code == 401


async def test_rotated_secrets_are_all_accepted() -> None:
    app = app_for(lambda step: "ok", secrets=[OTHER_SECRET, SECRET])
    assert (await post(app, STEP_BODY, secrets=[SECRET])).status_code == 200
    assert (await post(app, STEP_BODY, secrets=[OTHER_SECRET])).status_code == 200


async def test_tolerance_is_configurable() -> None:
    app = app_for(lambda step: "ok", tolerance=7200)
    assert (await post(app, STEP_BODY, **_stale())).status_code == 200


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (json.dumps({"stepId": "x"}).encode(), "workflowId"),
        (json.dumps({**STEP_BODY, "attempt": "2"}).encode(), "attempt"),
        (json.dumps({**STEP_BODY, "context": [1]}).encode(), "context must be an object"),
    ],
    ids=["text", "binary", "array", "no-workflow-id", "attempt-string", "context-list"],
)
async def test_malformed_bodies_answer_400(body: bytes, message: str) -> None:
    called: list[StepRequest] = []
    response = await post(app_for(called.append), body)
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert called == []


def test_a_bad_secret_fails_when_the_app_is_built() -> None:
    with pytest.raises(InvalidSecret):
        step_endpoint(async_total, secrets=["whsec_***"])


# --- verify_request ---------------------------------------------------------------------


def _verify_app(secrets: Any) -> Starlette:
    async def hook(request: Request) -> Response:
        return JSONResponse(await verify_request(request, secrets))

    return Starlette(routes=[Route("/hook", hook, methods=["POST"])])


@pytest.mark.parametrize(
    "secrets", [SECRET, [SECRET], Signer(SECRET)], ids=["str", "list", "signer"]
)
async def test_verify_request_returns_the_body(secrets: Any) -> None:
    body = {"workflowId": "wf_1", "status": "completed"}
    response = await post(_verify_app(secrets), body, path="/hook")
    assert response.json() == body


@pytest.mark.parametrize(
    ("signing_secret", "error"),
    [(None, MissingHeaders), (OTHER_SECRET, NoMatchingSignature)],
    ids=["missing", "wrong-secret"],
)
async def test_verify_request_raises(signing_secret: str | None, error: type[Exception]) -> None:
    # Signed here, not at collection: a long suite would otherwise make the timestamp stale.
    headers = signed(b"{}", secrets=[signing_secret])[1] if signing_secret else {}
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/hook",
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    with pytest.raises(error):
        await verify_request(Request(scope, receive), SECRET)


def test_starlette_helpers_are_reexported_lazily() -> None:
    assert baton.StepFailed is StepFailed
    assert baton.StepRequest is StepRequest
    assert baton.step_endpoint is step_endpoint
    assert baton.verify_request is verify_request
    with pytest.raises(AttributeError):
        _ = baton.no_such_name
