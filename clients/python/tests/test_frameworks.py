"""The handler helpers of every framework, each driven by the framework's own test client,
with requests signed by Baton's signer (the server's) and by the `standardwebhooks` library."""

from __future__ import annotations

import base64
import json
import time
import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import django
import pytest
from django.conf import settings
from fakes import STEP_BODY
from handler_apps import CALLS, SECRET, fastapi_app, flask_app, starlette_app
from standardwebhooks.webhooks import Webhook

from baton.signing import generate_secret
from baton.testing import signed_request

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="test-only",
        ALLOWED_HOSTS=["testserver"],
        ROOT_URLCONF="handler_apps",
        # CSRF checks on, to show that the step views are exempt from them.
        MIDDLEWARE=["django.middleware.csrf.CsrfViewMiddleware"],
        INSTALLED_APPS=[],
    )
    django.setup()

STEP = STEP_BODY

Post = Callable[[str, bytes, dict[str, str]], tuple[int, Any]]


def _decode(status: int, content: bytes) -> tuple[int, Any]:
    try:
        return status, json.loads(content)
    except ValueError:
        return status, content.decode()


def _asgi_poster(app: Any) -> Iterator[Post]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # starlette.testclient warns about its httpx use
        from starlette.testclient import TestClient
    with TestClient(app, raise_server_exceptions=False) as client:
        yield lambda path, raw, headers: _decode(
            *(lambda r: (r.status_code, r.content))(client.post(path, content=raw, headers=headers))
        )


def _flask_poster() -> Iterator[Post]:
    client = flask_app().test_client()

    def post(path: str, raw: bytes, headers: dict[str, str]) -> tuple[int, Any]:
        response = client.post(path, data=raw, headers=headers)
        return _decode(response.status_code, response.data)

    yield post


def _django_poster() -> Iterator[Post]:
    from django.test import Client

    client = Client(enforce_csrf_checks=True)

    def post(path: str, raw: bytes, headers: dict[str, str]) -> tuple[int, Any]:
        plain = {k: v for k, v in headers.items() if k.lower() != "content-type"}
        response = client.post(path, data=raw, content_type="application/json", headers=plain)
        return _decode(response.status_code, response.content)

    yield post


FRAMEWORKS = {
    "starlette": lambda: _asgi_poster(starlette_app()),
    "fastapi": lambda: _asgi_poster(fastapi_app()),
    "flask": _flask_poster,
    "django": _django_poster,
}


@pytest.fixture(params=list(FRAMEWORKS))
def framework(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def post(framework: str) -> Iterator[Post]:
    CALLS.clear()
    yield from FRAMEWORKS[framework]()


def baton_signed(body: Any, secret: str = SECRET, **options: Any) -> tuple[bytes, dict[str, str]]:
    """Signed by `baton.signing.Signer`, the server's own signer."""
    return signed_request(body, secret, msg_id="msg_baton", **options)


def standard_signed(body: Any, secret: str = SECRET) -> tuple[bytes, dict[str, str]]:
    """Signed by the reference `standardwebhooks` library."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    now = datetime.now(tz=UTC)
    signature = Webhook(secret).sign("msg_standard", now, raw.decode())
    headers = {
        "webhook-id": "msg_standard",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }
    return raw, headers


SIGNERS = [
    pytest.param(baton_signed, id="baton-signer"),
    pytest.param(standard_signed, id="standardwebhooks"),
]


@pytest.mark.parametrize("sign", SIGNERS)
def test_a_signed_step_request_is_handled(post: Post, sign: Callable[..., Any]) -> None:
    raw, headers = sign(STEP)
    status, body = post("/step", raw, headers)
    assert status == 200
    assert body == {
        "success": True,
        "result": {"total": 4200, "attempt": 2, "messageId": headers["webhook-id"]},
    }
    [step] = CALLS
    assert (step.workflow_id, step.step_id, step.kind) == ("order-123", "charge", "step")
    assert step.deadline == datetime(2026, 11, 21, 10, 0, 5, tzinfo=UTC)


@pytest.mark.parametrize("framework", ["starlette", "fastapi", "django"])
def test_async_step_functions(post: Post) -> None:
    status, body = post("/step-async", *standard_signed(STEP))
    assert (status, body["result"]["total"]) == (200, 4200)


def test_step_failed_is_a_failed_attempt(post: Post) -> None:
    status, body = post("/step", *baton_signed({**STEP, "context": {"mode": "fail"}}))
    assert (status, body) == (200, {"success": False, "error": "card declined", "retry": False})


def test_an_exception_answers_500(post: Post, framework: str) -> None:
    status, body = post("/step", *baton_signed({**STEP, "context": {"mode": "boom"}}))
    assert status == 500
    if framework != "fastapi":  # FastAPI's own 500 page
        assert body == {"success": False, "error": "KeyError: 'sku'"}


def test_a_framework_response_is_sent_as_is(post: Post) -> None:
    assert post("/async", *standard_signed(STEP)) == (202, {"async": True})


def _wrong_secret() -> tuple[bytes, dict[str, str]]:
    return baton_signed(STEP, generate_secret())


def _stale() -> tuple[bytes, dict[str, str]]:
    return baton_signed(STEP, timestamp=time.time() - 3600)


def _tampered() -> tuple[bytes, dict[str, str]]:
    raw, headers = standard_signed(STEP)
    return raw.replace(b"4200", b"1"), headers


def _unsigned() -> tuple[bytes, dict[str, str]]:
    return json.dumps(STEP).encode(), {"content-type": "application/json"}


def _other_secret_standard() -> tuple[bytes, dict[str, str]]:
    other = "whsec_" + base64.b64encode(b"k" * 32).decode()
    return standard_signed(STEP, other)


@pytest.mark.parametrize(
    "request_for",
    [_wrong_secret, _stale, _tampered, _unsigned, _other_secret_standard],
    ids=["wrong-secret", "stale", "tampered", "unsigned", "standard-other-secret"],
)
def test_a_request_that_is_not_baton_s_is_refused_401(
    post: Post, request_for: Callable[[], tuple[bytes, dict[str, str]]]
) -> None:
    status, _ = post("/step", *request_for())
    assert status == 401
    assert CALLS == [], "the function is not called"


@pytest.mark.parametrize(
    "raw",
    [b"not json", b"[1, 2]", json.dumps({"stepId": "x"}).encode()],
    ids=["not-json", "array", "no-workflow-id"],
)
def test_a_signed_body_that_is_not_a_step_request_is_refused_400(post: Post, raw: bytes) -> None:
    status, _ = post("/step", *baton_signed(raw))
    assert status == 400
    assert CALLS == []


@pytest.mark.parametrize("sign", SIGNERS)
def test_hook_receivers_verify_and_read_the_body(post: Post, sign: Callable[..., Any]) -> None:
    body = {"workflowId": "order-123", "status": "completed", "results": {"a": 1}}
    assert post("/hook", *sign(body)) == (200, body)
    status, _ = post("/hook", *sign(body, generate_secret()))
    assert status == 401


@pytest.mark.parametrize("framework", ["flask"])
def test_flask_url_variables_follow_the_step(post: Post) -> None:
    status, body = post("/step-async/7", *standard_signed(STEP))
    assert (status, body["result"]["n"]) == (200, 7)


def test_flask_refuses_async_functions() -> None:
    from baton.flask import step_handler

    async def handler(step: Any) -> None:
        return None

    with pytest.raises(TypeError, match="plain function"):
        step_handler(SECRET)(handler)


@pytest.mark.parametrize("framework", ["django"])
def test_django_views_take_post_only(post: Post) -> None:
    from django.test import Client

    assert Client().get("/step").status_code == 405
    assert CALLS == []
