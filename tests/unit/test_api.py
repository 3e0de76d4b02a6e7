"""The HTTP API in-process: auth, create, validation, idempotency, reads, lists, events.

Each test gets a fresh app on its own SQLite database, driven by Starlette's
TestClient as a context manager so the lifespan runs (migrations, dispatcher).
Step URLs name hosts under ``.example`` that never resolve, so every delivery
fails at once with a connection error in the background; that is enough to
drive a workflow to ``failed`` when it should get there.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import re
import threading
import time
import tracemalloc
import warnings
import zlib
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.datastructures import Secret
from starlette.exceptions import StarletteDeprecationWarning
from starlette.requests import Request
from tortoise import connections

from app.api import read_body
from app.errors import PayloadTooLarge
from app.main import CALLBACK_TOKEN_SECRET, create_app
from app.schemas import MAX_BODY_BYTES, MAX_STEPS
from app.settings import Settings
from app.tokens import CLOCK_LEEWAY, MAX_LIFETIME, CallbackClaim, CallbackTokens
from baton.signing import generate_secret

with warnings.catch_warnings():
    # Starlette 1.x would rather drive its test client with the httpx2 fork; the
    # project pins httpx, which the test client still supports.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

KEY = "k1"
OTHER_KEY = "k2"
AUTH = {"Authorization": f"Bearer {KEY}"}
SSE = {**AUTH, "Accept": "text/event-stream"}
PROBLEM = "application/problem+json"

#: A host that never resolves: deliveries to it fail at once with a connection error.
HANDLER = "https://handler.example"
ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$")
GENERATED_ID = re.compile(r"^wf_")
#: How long the lifespan shutdown may take before a test fails instead of hanging.
SHUTDOWN_SECONDS = 15.0

WORKFLOW_FIELDS = {
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
STEP_FIELDS = {
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
EVENT_FIELDS = {"id", "type", "workflowId", "stepId", "at", "data"}
WORKFLOW_STATUSES = {
    "pending",
    "running",
    "completed",
    "failed",
    "cancelled",
    "compensating",
    "compensated",
    "compensation_failed",
}
STEP_STATUSES = {"pending", "running", "retrying", "completed", "failed", "skipped", "cancelled"}
FINISHED = {"completed", "failed", "cancelled", "compensated", "compensation_failed"}
#: What stays put in a status document while its steps are being delivered.
STABLE_FIELDS = (
    "id",
    "name",
    "context",
    "saga",
    "failFast",
    "timeout",
    "onComplete",
    "onError",
    "createdAt",
    "startedAt",
)


# --------------------------------------------------------------------------- helpers


def make_app(tmp_path: Path, database_url: str | None = None) -> Starlette:
    return create_app(
        Settings(
            database_url=database_url or f"sqlite://{tmp_path}/db.sqlite3",
            data_dir=tmp_path,
            api_keys=(Secret(KEY), Secret(OTHER_KEY)),
            signing_secrets=(Secret(generate_secret()),),
            allow_private_networks=False,
        )
    )


def _release_a_leaked_connection_lock(test_client: TestClient) -> bool:
    """Free the SQLite connection lock of a hung shutdown, so the suite can go on.

    Only ever called once shutdown has already failed the test: it turns a hang of
    the whole run into one failure. Answers whether the lock was held.
    """

    async def release() -> bool:
        lock = connections.get("sqlite")._lock
        if not lock.locked():
            return False
        lock.release()
        return True

    try:
        return bool(test_client.portal.call(release))
    except Exception:
        return False


def close_client(test_client: TestClient) -> None:
    """Run the lifespan shutdown, failing the test (instead of hanging) if it never ends."""
    closer = threading.Thread(target=test_client.__exit__, args=(None, None, None), daemon=True)
    closer.start()
    closer.join(SHUTDOWN_SECONDS)
    if closer.is_alive():
        leaked = _release_a_leaked_connection_lock(test_client)
        closer.join(SHUTDOWN_SECONDS)
        pytest.fail(
            f"the app did not shut down within {SHUTDOWN_SECONDS} s"
            + (" (the SQLite connection lock was still held)" if leaked else "")
        )


@contextlib.contextmanager
def running(
    tmp_path: Path, database_url: str | None = None, *, root_path: str = ""
) -> Iterator[TestClient]:
    """A TestClient with the lifespan started (migrations, dispatcher) and then stopped.

    With ``root_path``, requests carry it in their scope as uvicorn's ``--root-path``
    does: the path of each request starts with it.
    """
    tmp_path.mkdir(parents=True, exist_ok=True)
    # Server errors come back as responses, so that a 5xx fails an assertion about
    # the status instead of surfacing as an exception from inside the app.
    test_client = TestClient(
        make_app(tmp_path, database_url), raise_server_exceptions=False, root_path=root_path
    )
    test_client.__enter__()
    try:
        yield test_client
    finally:
        close_client(test_client)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with running(tmp_path) as test_client:
        yield test_client


@pytest.fixture
def any_db_client(tmp_path: Path, app_database_url: str) -> Iterator[TestClient]:
    """``client`` on SQLite and on PostgreSQL, for input that only one of them refuses."""
    with running(tmp_path, app_database_url) as test_client:
        yield test_client


def step(step_id: str = "a", **fields: Any) -> dict[str, Any]:
    return {"id": step_id, "url": f"{HANDLER}/{step_id}", **fields}


def workflow(*steps: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"steps": list(steps) or [step()], **fields}


def fails_at_once(**fields: Any) -> dict[str, Any]:
    """A workflow whose only step fails for good on its first attempt."""
    return workflow(step("a", retries={"maxAttempts": 1}), **fields)


def parked(**fields: Any) -> dict[str, Any]:
    """A workflow that stays ``running``: its step waits an hour before a second attempt."""
    return workflow(step("a", retries={"maxAttempts": 2, "delay": 3600, "jitter": False}), **fields)


def finishes_at_once(**fields: Any) -> dict[str, Any]:
    """A workflow that completes without sending anything: its only step is skipped."""
    return workflow(step("a", when="false"), **fields)


def create(client: TestClient, body: dict[str, Any], **headers: str) -> dict[str, Any]:
    response = client.post("/v1/workflows", json=body, headers={**AUTH, **headers})
    assert response.status_code == 201, response.text
    document: dict[str, Any] = response.json()
    return document


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """Assert an RFC 9457 problem document with ``status``, and return it."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0].strip() == PROBLEM
    document = response.json()
    assert {"type", "title", "status", "detail", "errors"} <= set(document)
    assert isinstance(document["type"], str) and document["type"]
    assert isinstance(document["title"], str) and document["title"]
    assert document["status"] == status
    assert isinstance(document["detail"], str) and document["detail"]
    assert isinstance(document["errors"], list)
    for error in document["errors"]:
        assert set(error) >= {"path", "message"}
        assert isinstance(error["path"], str)
        assert isinstance(error["message"], str) and error["message"]
    return dict(document)


def error_paths(response: httpx.Response, status: int = 422) -> list[str]:
    return [e["path"] for e in assert_problem(response, status)["errors"]]


def messages_at(response: httpx.Response, path: str) -> list[str]:
    return [e["message"] for e in response.json()["errors"] if e["path"] == path]


def list_all(client: TestClient, **params: Any) -> list[dict[str, Any]]:
    response = client.get("/v1/workflows", params=params, headers=AUTH)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def assert_nothing_stored(client: TestClient) -> None:
    assert list_all(client) == []


def get_workflow(client: TestClient, workflow_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/workflows/{workflow_id}", headers=AUTH)
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


def wait_for_status(
    client: TestClient, workflow_id: str, statuses: set[str], seconds: float = 20.0
) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        document = get_workflow(client, workflow_id)
        if document["status"] in statuses:
            return document
        assert time.monotonic() < deadline, f"still {document['status']}: {document}"
        time.sleep(0.05)


def wait_for(
    condition: Callable[[], bool], seconds: float = 20.0, message: str = "timed out"
) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


def read_whole(
    client: TestClient, url: str, headers: dict[str, str], seconds: float = 30.0
) -> httpx.Response:
    """GET ``url`` and read the response to its end, failing if it does not end in time."""
    outcome: dict[str, Any] = {}

    def read() -> None:
        try:
            outcome["response"] = client.get(url, headers=headers)
        except BaseException as exc:
            outcome["error"] = exc

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(seconds)
    assert not reader.is_alive(), f"{url} did not end within {seconds} s"
    if "error" in outcome:
        raise outcome["error"]
    response: httpx.Response = outcome["response"]
    return response


def parse_sse(text: str) -> list[dict[str, str]]:
    """Split an event stream into its events (comments and keep-alives dropped)."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            fields[name] = fields[name] + "\n" + value if name in fields else value
        if fields:
            events.append(fields)
    return events


def cursor(created_at: str, workflow_id: str) -> str:
    """A list cursor as the server makes them, naming any time and id."""
    raw = json.dumps([created_at, workflow_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def assert_iso_utc(value: Any) -> None:
    assert isinstance(value, str) and ISO_UTC.match(value), value
    datetime.fromisoformat(value.replace("Z", "+00:00"))


# --------------------------------------------------------------------------- auth


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-header"),
        pytest.param({"Authorization": "Basic azE6"}, id="basic-scheme"),
        pytest.param({"Authorization": KEY}, id="no-scheme"),
        pytest.param({"Authorization": "Bearer"}, id="no-token"),
        pytest.param({"Authorization": "Bearer "}, id="empty-token"),
        pytest.param({"Authorization": "Bearer wrong"}, id="wrong-key"),
        pytest.param({"Authorization": "Bearer k"}, id="prefix-of-a-key"),
        pytest.param({"Authorization": "Bearer k1k2"}, id="keys-run-together"),
        pytest.param({"Authorization": "Token k1"}, id="token-scheme"),
    ],
)
def test_v1_refuses_requests_without_a_valid_key(
    client: TestClient, headers: dict[str, str]
) -> None:
    response = client.get("/v1/workflows", headers=headers)
    assert_problem(response, 401)
    assert response.headers["www-authenticate"].lower().startswith("bearer")


def test_unauthorized_create_stores_nothing(client: TestClient) -> None:
    response = client.post("/v1/workflows", json=workflow())
    assert_problem(response, 401)
    assert "www-authenticate" in response.headers
    assert_nothing_stored(client)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/workflows/anything"),
        ("GET", "/v1/workflows/anything/events"),
        ("GET", "/v1/workflows/anything/steps/a"),
        ("GET", "/v1/workflows/anything/steps/a/dependencies"),
        ("POST", "/v1/workflows/anything/cancel"),
        ("GET", "/v1/no-such-route"),
    ],
)
def test_every_v1_route_is_behind_the_key(client: TestClient, method: str, path: str) -> None:
    response = client.request(method, path, headers={"Authorization": "Bearer nope"})
    assert_problem(response, 401)
    assert "www-authenticate" in response.headers


@pytest.mark.parametrize("key", [KEY, OTHER_KEY])
def test_either_key_is_accepted(client: TestClient, key: str) -> None:
    response = client.get("/v1/workflows", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    created = client.post(
        "/v1/workflows", json=workflow(), headers={"Authorization": f"Bearer {key}"}
    )
    assert created.status_code == 201, created.text


def test_the_auth_scheme_is_case_insensitive(client: TestClient) -> None:
    # RFC 9110 §11.1: the authentication scheme is a case-insensitive token.
    response = client.get("/v1/workflows", headers={"Authorization": f"bearer {KEY}"})
    assert response.status_code == 200, response.text


def test_the_root_sends_a_browser_to_the_console(client: TestClient) -> None:
    response = client.get("/", follow_redirects=False)
    assert response.status_code == 302
    assert response.headers["location"] == "/ui"
    assert client.get("/").headers["content-type"].startswith("text/html")


def test_health_checks_need_no_key(client: TestClient) -> None:
    healthz = client.get("/healthz")
    assert healthz.status_code == 200, healthz.text
    readyz = client.get("/readyz")
    assert readyz.status_code == 200, readyz.text


@pytest.mark.parametrize(
    "path", ["/v1/callbacks/not-a-real-token", "/v1/callbacks/not-a-real-token/heartbeat"]
)
def test_callbacks_are_not_behind_the_key(client: TestClient, path: str) -> None:
    response = client.post(path, json={"success": True, "result": None})
    assert response.status_code != 401, response.text
    assert response.status_code < 500, response.text


def test_behind_a_root_path_the_key_is_checked_on_the_routes_path(tmp_path: Path) -> None:
    # uvicorn --root-path /baton: the scope's path is /baton/v1/..., its root_path /baton.
    with running(tmp_path, root_path="/baton") as prefixed:
        listed = prefixed.get("/baton/v1/workflows", headers=AUTH)
        assert listed.status_code == 200, listed.text
        created = prefixed.post("/baton/v1/workflows", json=workflow(id="behind"), headers=AUTH)
        assert created.status_code == 201, created.text
        assert created.headers["location"] == "/baton/v1/workflows/behind"
        read = prefixed.get(created.headers["location"], headers=AUTH)
        assert read.status_code == 200, read.text
        for method, path in [("GET", "/baton/v1/workflows"), ("GET", "/baton/v1/nope")]:
            refused = prefixed.request(method, path, headers={"Authorization": "Bearer nope"})
            assert_problem(refused, 401)
        # The callbacks stay outside the key behind the prefix too.
        callback = prefixed.post("/baton/v1/callbacks/not-a-token", json={"success": True})
        assert_problem(callback, 403)
        # The API documentation points "try it out" at the prefixed URLs.
        document = prefixed.get("/baton/openapi.json").json()
        assert document["servers"] == [{"url": "/baton"}]
        home = prefixed.get("/baton/", follow_redirects=False)
        assert home.headers["location"] == "/baton/ui"
    with running(tmp_path / "plain") as plain:
        assert "servers" not in plain.get("/openapi.json").json()


# --------------------------------------------------------------------------- create


def test_create_answers_201_with_the_full_status_document(client: TestClient) -> None:
    body = workflow(
        step("zeta", dependsOn=["alpha"]),
        step("mid"),
        step("alpha"),
        name="order-processing",
        context={"orderId": "order_123", "total": 4200},
    )
    response = client.post("/v1/workflows", json=body, headers=AUTH)
    assert response.status_code == 201, response.text
    assert response.headers["content-type"].startswith("application/json")
    document = response.json()

    assert set(document) >= WORKFLOW_FIELDS
    assert GENERATED_ID.match(document["id"]), document["id"]
    assert response.headers["location"].endswith(f"/v1/workflows/{document['id']}")
    assert document["name"] == "order-processing"
    assert document["context"] == {"orderId": "order_123", "total": 4200}
    assert document["status"] in WORKFLOW_STATUSES
    assert_iso_utc(document["createdAt"])
    for name in ("startedAt", "completedAt"):
        if document[name] is not None:
            assert_iso_utc(document[name])
    for name in ("currentSteps", "completedSteps", "failedSteps", "skippedSteps"):
        assert isinstance(document[name], list)
        assert set(document[name]) <= {"zeta", "mid", "alpha"}
    assert isinstance(document["results"], dict)

    # Declaration order, not alphabetical and not topological.
    assert [s["id"] for s in document["steps"]] == ["zeta", "mid", "alpha"]
    for s in document["steps"]:
        assert set(s) >= STEP_FIELDS, s
        assert s["url"] == f"{HANDLER}/{s['id']}"
        assert s["status"] in STEP_STATUSES
        assert isinstance(s["attempts"], int)
        for name in ("startedAt", "completedAt"):
            if s[name] is not None:
                assert_iso_utc(s[name])
        assert s["compensation"] is None
        assert s["compensationStatus"] is None
    by_id = {s["id"]: s for s in document["steps"]}
    assert by_id["zeta"]["dependsOn"] == ["alpha"]
    assert by_id["mid"]["dependsOn"] == []

    assert get_workflow(client, document["id"])["id"] == document["id"]
    assert client.get(response.headers["location"], headers=AUTH).status_code == 200


def test_create_fills_in_the_defaults(client: TestClient) -> None:
    document = create(client, {"steps": [{"id": "a", "url": f"{HANDLER}/a"}]})
    assert document["name"] is None
    assert document["context"] == {}
    assert document["saga"] is False
    assert document["failFast"] is True
    assert document["timeout"] == 86400
    assert document["onComplete"] is None
    assert document["onError"] is None
    (only,) = document["steps"]
    assert only["maxAttempts"] == 3
    assert only["dependsOn"] == []
    assert only["compensation"] is None
    assert only["compensationStatus"] is None


def test_create_keeps_what_was_given(client: TestClient) -> None:
    body = workflow(
        step(
            "charge",
            retries={"maxAttempts": 7, "backoff": "linear", "delay": 0.5, "maxDelay": 10},
            timeout=12.5,
            compensation=f"{HANDLER}/refund",
            when="context.total > 0",
            continueOnFailure=True,
            parallel=True,
        ),
        id="order-123",
        context={"total": 1},
        onComplete=f"{HANDLER}/done",
        onError=f"{HANDLER}/failed",
        timeout=600,
        saga=True,
        failFast=False,
    )
    document = create(client, body)
    assert document["id"] == "order-123"
    assert document["onComplete"] == f"{HANDLER}/done"
    assert document["onError"] == f"{HANDLER}/failed"
    assert document["timeout"] == 600
    assert document["saga"] is True
    assert document["failFast"] is False
    (charge,) = document["steps"]
    assert charge["maxAttempts"] == 7
    assert charge["compensation"] == f"{HANDLER}/refund"


def test_a_step_skipped_by_when_finishes_the_workflow(client: TestClient) -> None:
    document = create(client, finishes_at_once())
    document = wait_for_status(client, document["id"], FINISHED)
    assert document["status"] == "completed"
    assert document["skippedSteps"] == ["a"]
    assert document["steps"][0]["status"] == "skipped"
    assert_iso_utc(document["completedAt"])


def test_a_failed_workflow_names_its_step_and_the_step_its_error(client: TestClient) -> None:
    document = create(client, fails_at_once())
    document = wait_for_status(client, document["id"], FINISHED)
    assert document["status"] == "failed"
    assert document["failedSteps"] == ["a"]
    assert document["currentSteps"] == []
    assert set(document["error"]) >= {"code", "message", "stepId"}
    assert document["error"]["code"] == "step_failed"
    assert document["error"]["stepId"] == "a"
    (failed,) = document["steps"]
    assert failed["status"] == "failed"
    assert failed["attempts"] == 1
    assert set(failed["error"]) >= {"code", "message", "httpStatus"}
    assert failed["error"]["code"] == "connection_error"
    assert failed["error"]["httpStatus"] is None
    assert_iso_utc(document["completedAt"])


# ----------------------------------------------------------------------- validation


def test_several_problems_give_one_entry_each(client: TestClient) -> None:
    body = {
        "id": "bad id",
        "name": 5,
        "steps": [
            {
                "id": "a",
                "url": "ftp://handler.example/a",
                "retries": {"maxAttempts": 0, "delay": 3601},
                "timeout": 0,
            }
        ],
        "timeout": 2678401,
        "saga": "yes",
    }
    response = client.post("/v1/workflows", json=body, headers=AUTH)
    paths = error_paths(response)
    assert sorted(paths) == sorted(
        [
            "id",
            "name",
            "steps[0].url",
            "steps[0].retries.maxAttempts",
            "steps[0].retries.delay",
            "steps[0].timeout",
            "timeout",
            "saga",
        ]
    )
    assert_nothing_stored(client)


def test_rules_across_steps_are_reported_together(client: TestClient) -> None:
    body = {
        "steps": [
            {"id": "a", "url": "http://127.0.0.1/x", "dependsOn": ["b", "zz"]},
            {"id": "b", "url": f"{HANDLER}/b", "dependsOn": ["a"], "when": "context.total >"},
            {"id": "a", "url": f"{HANDLER}/c", "compensation": "http://169.254.169.254/"},
        ],
        "onComplete": "http://10.0.0.1/",
    }
    response = client.post("/v1/workflows", json=body, headers=AUTH)
    paths = error_paths(response)
    assert sorted(paths) == sorted(
        [
            "steps[2].id",
            "steps[0].dependsOn[1]",
            "steps",
            "steps[0].url",
            "steps[1].when",
            "steps[2].compensation",
            "onComplete",
        ]
    )
    assert messages_at(response, "steps") == ["cycle: a -> b -> a"]
    assert_nothing_stored(client)


@pytest.mark.parametrize(
    ("dependencies", "cycles"),
    [
        pytest.param(
            {"a": ["b"], "b": ["a"]}, {"cycle: a -> b -> a", "cycle: b -> a -> b"}, id="two"
        ),
        pytest.param(
            {"a": ["c"], "b": ["a"], "c": ["b"]},
            {"cycle: a -> c -> b -> a", "cycle: c -> b -> a -> c", "cycle: b -> a -> c -> b"},
            id="three",
        ),
    ],
)
def test_a_cycle_is_named(
    client: TestClient, dependencies: dict[str, list[str]], cycles: set[str]
) -> None:
    body = workflow(*(step(s, dependsOn=deps) for s, deps in dependencies.items()))
    response = client.post("/v1/workflows", json=body, headers=AUTH)
    assert error_paths(response) == ["steps"]
    (message,) = messages_at(response, "steps")
    assert message in cycles
    assert_nothing_stored(client)


def test_a_step_depending_on_itself_is_refused(client: TestClient) -> None:
    response = client.post("/v1/workflows", json=workflow(step("a", dependsOn=["a"])), headers=AUTH)
    paths = error_paths(response)
    assert paths, response.text
    assert set(paths) <= {"steps", "steps[0].dependsOn[0]"}
    assert_nothing_stored(client)


def test_an_unknown_dependency_is_named(client: TestClient) -> None:
    body = workflow(step("a"), step("b", dependsOn=["a", "nope"]))
    response = client.post("/v1/workflows", json=body, headers=AUTH)
    assert error_paths(response) == ["steps[1].dependsOn[1]"]
    assert "nope" in messages_at(response, "steps[1].dependsOn[1]")[0]
    assert_nothing_stored(client)


def test_a_duplicate_step_id_is_named(client: TestClient) -> None:
    body = workflow(step("a"), step("b"), step("a"))
    response = client.post("/v1/workflows", json=body, headers=AUTH)
    assert error_paths(response) == ["steps[2].id"]
    assert "duplicate" in messages_at(response, "steps[2].id")[0]
    assert_nothing_stored(client)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://handler.example/a",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "handler.example/a",
        "gopher://handler.example/",
        "https://",
        "",
    ],
)
def test_a_url_must_be_http_or_https(client: TestClient, url: str) -> None:
    response = client.post("/v1/workflows", json=workflow(step("a", url=url)), headers=AUTH)
    assert error_paths(response) == ["steps[0].url"]
    assert_nothing_stored(client)


@pytest.mark.parametrize(
    ("body", "path"),
    [
        pytest.param(workflow(step("a", url="http://127.0.0.1/x")), "steps[0].url", id="loopback"),
        pytest.param(workflow(step("a", url="http://10.0.0.1/")), "steps[0].url", id="private"),
        pytest.param(
            workflow(step("a", url="http://169.254.169.254/")), "steps[0].url", id="metadata"
        ),
        pytest.param(workflow(step("a", url="http://localhost:8000/")), "steps[0].url", id="name"),
        pytest.param(workflow(step("a", url="http://[::1]/")), "steps[0].url", id="ipv6-loopback"),
        pytest.param(workflow(onComplete="http://10.0.0.1/"), "onComplete", id="on-complete"),
        pytest.param(workflow(onError="http://192.168.1.1/"), "onError", id="on-error"),
        pytest.param(
            workflow(step("a", compensation="http://169.254.169.254/")),
            "steps[0].compensation",
            id="compensation",
        ),
        pytest.param(
            workflow(step("a"), step("b", url="http://127.0.0.1/x")),
            "steps[1].url",
            id="second-step",
        ),
    ],
)
def test_a_private_address_is_refused(client: TestClient, body: dict[str, Any], path: str) -> None:
    response = client.post("/v1/workflows", json=body, headers=AUTH)
    assert error_paths(response) == [path]
    assert "private networks" in messages_at(response, path)[0].lower()
    assert_nothing_stored(client)


@pytest.mark.parametrize("expression", ["context.total >", "(", "1 +", "context.total > > 0", "@@"])
def test_an_invalid_when_is_refused(client: TestClient, expression: str) -> None:
    body = workflow(step("a"), step("b", when=expression))
    response = client.post("/v1/workflows", json=body, headers=AUTH)
    assert error_paths(response) == ["steps[1].when"]
    assert_nothing_stored(client)


@pytest.mark.parametrize(
    ("step_fields", "workflow_fields", "path"),
    [
        pytest.param(
            {"retries": {"maxAttempts": 0}}, {}, "steps[0].retries.maxAttempts", id="attempts-0"
        ),
        pytest.param(
            {"retries": {"maxAttempts": 101}},
            {},
            "steps[0].retries.maxAttempts",
            id="attempts-101",
        ),
        pytest.param({"retries": {"delay": 3601}}, {}, "steps[0].retries.delay", id="delay-3601"),
        pytest.param({"retries": {"delay": -1}}, {}, "steps[0].retries.delay", id="delay-neg"),
        pytest.param(
            {"retries": {"maxDelay": 86401}}, {}, "steps[0].retries.maxDelay", id="max-delay"
        ),
        pytest.param(
            {"retries": {"backoff": "quadratic"}}, {}, "steps[0].retries.backoff", id="backoff"
        ),
        pytest.param({"timeout": 0}, {}, "steps[0].timeout", id="step-timeout-0"),
        pytest.param({"timeout": -5}, {}, "steps[0].timeout", id="step-timeout-negative"),
        pytest.param({"timeout": 86401}, {}, "steps[0].timeout", id="step-timeout-86401"),
        pytest.param({}, {"timeout": 2678401}, "timeout", id="workflow-timeout-over-31-days"),
        pytest.param({}, {"timeout": 0}, "timeout", id="workflow-timeout-0"),
        pytest.param({"when": "true" + " " * 4093}, {}, "steps[0].when", id="when-4097-chars"),
        pytest.param({"id": "-a"}, {}, "steps[0].id", id="id-leading-dash"),
        pytest.param({"id": "a b"}, {}, "steps[0].id", id="id-space"),
        pytest.param({"id": "a/b"}, {}, "steps[0].id", id="id-slash"),
        pytest.param({"id": "a" * 129}, {}, "steps[0].id", id="id-129-chars"),
        pytest.param({"id": ""}, {}, "steps[0].id", id="id-empty"),
        pytest.param({"id": "é"}, {}, "steps[0].id", id="id-non-ascii"),
        pytest.param({}, {"id": "bad id"}, "id", id="workflow-id"),
        pytest.param({}, {"id": "_leading"}, "id", id="workflow-id-underscore"),
    ],
)
def test_limits_are_enforced(
    client: TestClient, step_fields: dict[str, Any], workflow_fields: dict[str, Any], path: str
) -> None:
    body = workflow(step("a", **step_fields), **workflow_fields)
    response = client.post("/v1/workflows", json=body, headers=AUTH)
    assert error_paths(response) == [path]
    assert_nothing_stored(client)


def test_limits_are_inclusive(client: TestClient) -> None:
    body = workflow(
        step(
            "a",
            retries={"maxAttempts": 100, "delay": 3600, "maxDelay": 86400},
            timeout=86400,
            when="true" + " " * 4092,
        ),
        step("b" * 128, retries={"maxAttempts": 1, "delay": 0, "maxDelay": 0}, timeout=0.001),
        id="A1_.:-" + "z" * 122,
        timeout=2678400,
    )
    document = create(client, body)
    assert document["id"] == body["id"]
    assert [s["maxAttempts"] for s in document["steps"]] == [100, 1]


@pytest.mark.parametrize(
    ("body", "path"),
    [
        pytest.param({}, "steps", id="no-steps-field"),
        pytest.param({"steps": []}, "steps", id="empty-steps"),
        pytest.param({"steps": {"a": {}}}, "steps", id="steps-object"),
        pytest.param({"steps": [5]}, "steps[0]", id="step-number"),
        pytest.param({"steps": [{"id": "a"}]}, "steps[0].url", id="step-without-url"),
        pytest.param({"steps": [{"url": f"{HANDLER}/a"}]}, "steps[0].id", id="step-without-id"),
        pytest.param(workflow(step("a", id=7)), "steps[0].id", id="id-number"),
        pytest.param(workflow(step("a", url=["x"])), "steps[0].url", id="url-array"),
        pytest.param(workflow(step("a", dependsOn="b")), "steps[0].dependsOn", id="deps-string"),
        pytest.param(workflow(step("a", dependsOn=[1])), "steps[0].dependsOn[0]", id="dep-int"),
        pytest.param(
            workflow(step("a", retries={"maxAttempts": "3"})),
            "steps[0].retries.maxAttempts",
            id="attempts-string",
        ),
        pytest.param(
            workflow(step("a", retries={"maxAttempts": 2.5})),
            "steps[0].retries.maxAttempts",
            id="attempts-fraction",
        ),
        pytest.param(workflow(step("a", retries=3)), "steps[0].retries", id="retries-number"),
        pytest.param(workflow(step("a", timeout="30")), "steps[0].timeout", id="timeout-string"),
        pytest.param(workflow(step("a", timeout=True)), "steps[0].timeout", id="timeout-bool"),
        pytest.param(workflow(step("a", when=5)), "steps[0].when", id="when-number"),
        pytest.param(
            workflow(step("a", continueOnFailure="yes")),
            "steps[0].continueOnFailure",
            id="continue-string",
        ),
        pytest.param(workflow(step("a", bogus=1)), "steps[0].bogus", id="unknown-step-field"),
        pytest.param(workflow(context=[1, 2]), "context", id="context-array"),
        pytest.param(workflow(context="x"), "context", id="context-string"),
        pytest.param(workflow(saga="yes"), "saga", id="saga-string"),
        pytest.param(workflow(failFast=1), "failFast", id="fail-fast-int"),
        pytest.param(workflow(name=["x"]), "name", id="name-array"),
        pytest.param(workflow(onComplete=5), "onComplete", id="on-complete-number"),
        pytest.param(workflow(bogus=True), "bogus", id="unknown-field"),
        pytest.param(workflow(id=123), "id", id="workflow-id-number"),
    ],
)
def test_wrong_types_are_refused(client: TestClient, body: dict[str, Any], path: str) -> None:
    response = client.post("/v1/workflows", json=body, headers=AUTH)
    assert error_paths(response) == [path]
    assert_nothing_stored(client)


def test_more_than_ten_thousand_steps_are_refused(client: TestClient) -> None:
    body = {"steps": [{"id": f"s{i}", "url": f"{HANDLER}/a"} for i in range(MAX_STEPS + 1)]}
    response = client.post("/v1/workflows", json=body, headers=AUTH)
    assert error_paths(response) == ["steps"]
    assert str(MAX_STEPS) in messages_at(response, "steps")[0].replace(",", "")
    assert_nothing_stored(client)


def test_ten_thousand_steps_in_a_chain_are_accepted(client: TestClient) -> None:
    steps = [step("s0")] + [step(f"s{i}", dependsOn=[f"s{i - 1}"]) for i in range(1, MAX_STEPS)]
    document = create(client, {"steps": steps})
    assert len(document["steps"]) == MAX_STEPS
    assert document["steps"][-1]["id"] == f"s{MAX_STEPS - 1}"


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"   \n", id="whitespace"),
        pytest.param(b"{", id="truncated"),
        pytest.param(b"not json", id="text"),
        pytest.param(b'{"steps": [}', id="syntax-error"),
        pytest.param(b"{'steps': []}", id="single-quotes"),
        pytest.param(b'{"steps": [], }', id="trailing-comma"),
        pytest.param(b'{"timeout": NaN, "steps": []}', id="nan"),
        pytest.param(b'{"timeout": Infinity, "steps": []}', id="infinity"),
        pytest.param(b"\xff\xfe{}", id="not-utf-8"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="deep-nesting"),
    ],
)
def test_a_body_that_is_not_json_is_a_400(client: TestClient, content: bytes) -> None:
    response = client.post(
        "/v1/workflows",
        content=content,
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert_problem(response, 400)
    assert_nothing_stored(client)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"[]", id="empty-array"),
        pytest.param(json.dumps([workflow()]).encode(), id="array-of-workflows"),
        pytest.param(b'"steps"', id="string"),
        pytest.param(b"42", id="number"),
        pytest.param(b"null", id="null"),
        pytest.param(b"true", id="boolean"),
    ],
)
def test_a_json_body_that_is_not_an_object_is_a_422(client: TestClient, content: bytes) -> None:
    response = client.post(
        "/v1/workflows",
        content=content,
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert len(error_paths(response)) == 1
    assert_nothing_stored(client)


def test_unstorable_values_are_a_422_naming_the_place(client: TestClient) -> None:
    content = (
        b'{"steps": [{"id": "a", "url": "https://handler.example/a"}], '
        b'"context": {"big": 123456789012345678901234567890, "nul": "a\\u0000b"}}'
    )
    response = client.post("/v1/workflows", content=content, headers=AUTH)
    assert sorted(error_paths(response)) == ["context.big", "context.nul"]
    assert_nothing_stored(client)


def _padded_body(size: int) -> bytes:
    """A valid create body padded with spaces to exactly ``size`` bytes."""
    start = json.dumps(workflow()).encode()[:-1]
    return start + b" " * (size - len(start) - 1) + b"}"


def test_a_body_over_one_mebibyte_is_a_413(client: TestClient) -> None:
    content = _padded_body(MAX_BODY_BYTES + 1)
    response = client.post("/v1/workflows", content=content, headers=AUTH)
    assert_problem(response, 413)
    assert_nothing_stored(client)


def test_a_streamed_body_over_one_mebibyte_is_a_413(client: TestClient) -> None:
    content = _padded_body(2 * MAX_BODY_BYTES)
    chunk = 64 * 1024

    def chunks() -> Iterator[bytes]:
        for offset in range(0, len(content), chunk):
            yield content[offset : offset + chunk]

    request = client.build_request("POST", "/v1/workflows", content=chunks(), headers=AUTH)
    assert "content-length" not in request.headers
    response = client.send(request)
    assert_problem(response, 413)
    assert_nothing_stored(client)


# ------------------------------------------------------------------ encoded bodies

GZIP = {**AUTH, "Content-Encoding": "gzip"}


def test_a_gzip_body_is_decoded(client: TestClient) -> None:
    content = gzip.compress(json.dumps(workflow(id="zipped", context={"n": 1})).encode())
    response = client.post("/v1/workflows", content=content, headers=GZIP)
    assert response.status_code == 201, response.text
    assert response.json()["context"] == {"n": 1}


@pytest.mark.parametrize("encoding", ["x-gzip", "GZIP", "identity, gzip"])
def test_other_spellings_of_gzip_are_gzip(client: TestClient, encoding: str) -> None:
    content = gzip.compress(json.dumps(workflow()).encode())
    response = client.post(
        "/v1/workflows", content=content, headers={**AUTH, "Content-Encoding": encoding}
    )
    assert response.status_code == 201, response.text


def test_a_gzip_body_of_several_members_is_decoded_whole(client: TestClient) -> None:
    raw = json.dumps(workflow(id="members")).encode()
    content = gzip.compress(raw[:10]) + gzip.compress(raw[10:])
    response = client.post("/v1/workflows", content=content, headers=GZIP)
    assert response.status_code == 201, response.text


def test_the_limit_applies_to_the_decoded_body(client: TestClient) -> None:
    at_limit = gzip.compress(_padded_body(MAX_BODY_BYTES))
    assert len(at_limit) < 10_000
    response = client.post("/v1/workflows", content=at_limit, headers=GZIP)
    assert response.status_code == 201, response.text
    over = gzip.compress(_padded_body(MAX_BODY_BYTES + 1))
    assert_problem(client.post("/v1/workflows", content=over, headers=GZIP), 413)


def test_a_gzip_bomb_is_a_413_at_once(client: TestClient) -> None:
    started = time.monotonic()
    response = client.post("/v1/workflows", content=gzip_bomb(256), headers=GZIP)
    assert_problem(response, 413)
    assert time.monotonic() - started < 5
    assert_nothing_stored(client)


def gzip_bomb(mebibytes: int) -> bytes:
    """A gzip stream of ``mebibytes`` MiB of zeros (about 1,000 times smaller)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1024 * 1024)
    return b"".join([*(compressor.compress(zeros) for _ in range(mebibytes)), compressor.flush()])


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(json.dumps(workflow()).encode(), id="not-gzip"),
        pytest.param(gzip.compress(json.dumps(workflow()).encode())[:-12], id="truncated"),
        pytest.param(gzip.compress(b"{}") + b"trailing", id="trailing-garbage"),
    ],
)
def test_a_body_that_is_not_gzip_is_a_400(client: TestClient, content: bytes) -> None:
    problem = assert_problem(client.post("/v1/workflows", content=content, headers=GZIP), 400)
    assert "gzip" in problem["detail"]


@pytest.mark.parametrize("encoding", ["br", "deflate", "gzip, gzip", "compress", "zstd"])
def test_another_content_encoding_is_a_415(client: TestClient, encoding: str) -> None:
    response = client.post(
        "/v1/workflows", json=workflow(), headers={**AUTH, "Content-Encoding": encoding}
    )
    assert_problem(response, 415)
    assert response.headers["accept-encoding"] == "gzip"
    assert_nothing_stored(client)


async def test_a_gzip_bomb_never_holds_more_than_the_limit() -> None:
    bomb = gzip_bomb(256)
    chunks = [bomb[offset : offset + 65536] for offset in range(0, len(bomb), 65536)]

    async def receive() -> dict[str, Any]:
        chunk = chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    scope = {"type": "http", "method": "POST", "headers": [(b"content-encoding", b"gzip")]}
    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooLarge):
            await read_body(Request(scope, receive), MAX_BODY_BYTES)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The limit plus a chunk's worth of overhead: never what the bomb inflates to.
    assert peak < 2 * MAX_BODY_BYTES + len(bomb)


# -------------------------------------------------------------- repeated keys and fields


def test_a_repeated_key_is_a_422_not_the_last_one_winning(client: TestClient) -> None:
    content = b'{"id": "a", "id": "b", "steps": [{"id": "s", "url": "https://handler.example/s"}]}'
    response = client.post("/v1/workflows", content=content, headers=AUTH)
    assert error_paths(response) == ["id"]
    assert_nothing_stored(client)


def test_a_repeated_key_in_a_cancel_or_a_callback_is_a_422(client: TestClient) -> None:
    workflow_id = create(client, parked())["id"]
    cancel = client.post(
        f"/v1/workflows/{workflow_id}/cancel",
        content=b'{"compensate": true, "compensate": false}',
        headers=AUTH,
    )
    assert error_paths(cancel) == ["compensate"]
    token = mint_token(client, CallbackClaim(workflow_id, "a", "run", 1), lifetime=3600)
    callback = client.post(f"/v1/callbacks/{token}", content=b'{"success": false, "success": true}')
    assert error_paths(callback) == ["success"]


def test_a_callback_with_an_unknown_field_is_a_422(client: TestClient) -> None:
    workflow_id = create(client, parked())["id"]
    token = mint_token(client, CallbackClaim(workflow_id, "a", "run", 1), lifetime=3600)
    response = client.post(f"/v1/callbacks/{token}", json={"success": True, "results": 1})
    assert messages_at(response, "results") == ["unknown field; did you mean 'result'?"]
    assert_problem(response, 422)


def test_an_integral_float_is_accepted_where_an_integer_is_expected(client: TestClient) -> None:
    body = workflow(step("a", retries={"maxAttempts": 3.0}))
    response = client.post("/v1/workflows", json=body, headers=AUTH)
    assert response.status_code == 201, response.text
    assert response.json()["steps"][0]["maxAttempts"] == 3
    half = workflow(step("a", retries={"maxAttempts": 3.5}))
    assert error_paths(client.post("/v1/workflows", json=half, headers=AUTH)) == [
        "steps[0].retries.maxAttempts"
    ]


def test_a_body_of_exactly_one_mebibyte_is_read(client: TestClient) -> None:
    content = _padded_body(MAX_BODY_BYTES)
    assert len(content) == MAX_BODY_BYTES
    response = client.post("/v1/workflows", content=content, headers=AUTH)
    assert response.status_code == 201, response.text


def test_a_streamed_body_under_the_limit_is_read(client: TestClient) -> None:
    content = json.dumps(workflow()).encode()

    def chunks() -> Iterator[bytes]:
        for offset in range(0, len(content), 7):
            yield content[offset : offset + 7]

    response = client.post("/v1/workflows", content=chunks(), headers=AUTH)
    assert response.status_code == 201, response.text


# ------------------------------------------------------------------------ idempotency


def stable(document: dict[str, Any]) -> dict[str, Any]:
    picked = {name: document[name] for name in STABLE_FIELDS}
    picked["steps"] = [(s["id"], s["url"], s["dependsOn"]) for s in document["steps"]]
    return picked


def test_same_id_and_body_answers_200_with_the_same_workflow(client: TestClient) -> None:
    body = workflow(step("a"), step("b", dependsOn=["a"]), id="order-123", context={"n": 1})
    first = create(client, body)
    again = client.post("/v1/workflows", json=body, headers=AUTH)
    assert again.status_code == 200, again.text
    assert set(again.json()) >= WORKFLOW_FIELDS
    assert stable(again.json()) == stable(first)
    assert again.headers["location"].endswith("/v1/workflows/order-123")
    assert [w["id"] for w in list_all(client)] == ["order-123"]


def test_same_body_in_another_key_order_and_spacing_is_the_same(client: TestClient) -> None:
    body = workflow(step("a"), id="order-123", context={"x": 1, "y": [1, 2]})
    first = create(client, body)
    reordered = {key: body[key] for key in reversed(list(body))}
    content = json.dumps(reordered, indent=4).encode()
    again = client.post("/v1/workflows", content=content, headers=AUTH)
    assert again.status_code == 200, again.text
    assert again.json()["createdAt"] == first["createdAt"]


def test_same_id_with_another_body_is_a_409(client: TestClient) -> None:
    create(client, workflow(id="order-123", context={"n": 1}))
    response = client.post(
        "/v1/workflows", json=workflow(id="order-123", context={"n": 2}), headers=AUTH
    )
    problem = assert_problem(response, 409)
    assert "order-123" in problem["detail"]
    (stored,) = list_all(client)
    assert get_workflow(client, stored["id"])["context"] == {"n": 1}


def test_idempotency_key_makes_a_create_without_id_repeatable(client: TestClient) -> None:
    body = workflow(name="keyed")
    first = create(client, body, **{"Idempotency-Key": "req-1"})
    assert GENERATED_ID.match(first["id"])
    again = client.post("/v1/workflows", json=body, headers={**AUTH, "Idempotency-Key": "req-1"})
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first["id"]
    assert stable(again.json()) == stable(first)
    other = create(client, body, **{"Idempotency-Key": "req-2"})
    assert other["id"] != first["id"]
    unkeyed = create(client, body)
    assert unkeyed["id"] not in {first["id"], other["id"]}
    assert len(list_all(client)) == 3


def test_idempotency_key_with_another_body_is_a_409(client: TestClient) -> None:
    create(client, workflow(name="one"), **{"Idempotency-Key": "req-1"})
    response = client.post(
        "/v1/workflows", json=workflow(name="two"), headers={**AUTH, "Idempotency-Key": "req-1"}
    )
    assert_problem(response, 409)
    assert [w["name"] for w in list_all(client)] == ["one"]


def test_idempotency_key_of_255_characters_is_accepted(client: TestClient) -> None:
    create(client, workflow(), **{"Idempotency-Key": "k" * 255})


def test_idempotency_key_over_255_characters_is_a_422(client: TestClient) -> None:
    response = client.post(
        "/v1/workflows", json=workflow(), headers={**AUTH, "Idempotency-Key": "k" * 256}
    )
    (path,) = error_paths(response)
    assert path.lower() == "idempotency-key"
    assert_nothing_stored(client)


@pytest.mark.parametrize("key", ["a\u0000b", "a\nb", "\u007f"])
def test_idempotency_key_with_control_characters_is_a_422(
    any_db_client: TestClient, key: str
) -> None:
    client = any_db_client
    response = client.post(
        "/v1/workflows", json=workflow(), headers={**AUTH, "Idempotency-Key": key.encode()}
    )
    (path,) = error_paths(response)
    assert path.lower() == "idempotency-key"
    assert_nothing_stored(client)


# ------------------------------------------------------------------------------ reads


def test_get_an_unknown_workflow_is_a_404(client: TestClient) -> None:
    response = client.get("/v1/workflows/nope", headers=AUTH)
    problem = assert_problem(response, 404)
    assert "nope" in problem["detail"]


def test_get_a_step_answers_its_document_with_the_attempt_log(client: TestClient) -> None:
    document = create(client, workflow(step("a"), step("b", dependsOn=["a"])))
    response = client.get(f"/v1/workflows/{document['id']}/steps/b", headers=AUTH)
    assert response.status_code == 200, response.text
    b = response.json()
    assert set(b) >= STEP_FIELDS | {"attemptLog"}
    assert b["id"] == "b"
    assert b["dependsOn"] == ["a"]
    assert b["maxAttempts"] == 3
    assert b["attemptLog"] == []


def test_the_attempt_log_records_each_attempt(client: TestClient) -> None:
    document = create(client, fails_at_once())
    wait_for_status(client, document["id"], FINISHED)
    response = client.get(f"/v1/workflows/{document['id']}/steps/a", headers=AUTH)
    assert response.status_code == 200, response.text
    log = response.json()["attemptLog"]
    assert isinstance(log, list) and len(log) == 1
    (attempt,) = log
    assert {"kind", "number", "startedAt", "durationMs", "httpStatus", "error"} <= set(attempt)
    assert attempt["kind"] == "step"
    assert attempt["number"] == 1
    assert attempt["httpStatus"] is None
    assert_iso_utc(attempt["startedAt"])


def test_get_an_unknown_step_says_which_is_missing(client: TestClient) -> None:
    document = create(client, workflow())
    unknown_step = client.get(f"/v1/workflows/{document['id']}/steps/zz", headers=AUTH)
    detail = assert_problem(unknown_step, 404)["detail"]
    assert "zz" in detail
    unknown_workflow = client.get("/v1/workflows/nope/steps/a", headers=AUTH)
    other = assert_problem(unknown_workflow, 404)["detail"]
    assert "nope" in other
    assert "workflow" in other.lower()
    assert other != detail


LONG_ID = "a" * 129


@pytest.mark.parametrize(
    "path",
    [
        f"/v1/workflows/{LONG_ID}",
        f"/v1/workflows/{LONG_ID}/events",
        f"/v1/workflows/{LONG_ID}/steps/a",
        f"/v1/workflows/{LONG_ID}/steps/a/dependencies",
        "/v1/workflows/{workflow_id}/steps/" + LONG_ID,
        "/v1/workflows/{workflow_id}/steps/" + LONG_ID + "/dependencies",
    ],
)
def test_an_id_longer_than_any_valid_one_is_a_404(client: TestClient, path: str) -> None:
    # No workflow or step can have such an id (ids are at most 128 characters).
    workflow_id = create(client, finishes_at_once())["id"]
    response = client.get(path.format(workflow_id=workflow_id), headers=AUTH)
    assert_problem(response, 404)


@pytest.mark.parametrize("workflow_id", ["a" * 128, "%00", "..", "wf_", "é"])
def test_odd_but_short_ids_are_a_404(client: TestClient, workflow_id: str) -> None:
    response = client.get(f"/v1/workflows/{workflow_id}", headers=AUTH)
    assert_problem(response, 404)


def test_dependencies_in_both_directions(client: TestClient) -> None:
    body = workflow(step("a"), step("b", dependsOn=["a"]), step("c", dependsOn=["a", "b"]))
    workflow_id = create(client, body)["id"]
    expected = {
        "a": {"dependsOn": [], "dependedOnBy": ["b", "c"]},
        "b": {"dependsOn": ["a"], "dependedOnBy": ["c"]},
        "c": {"dependsOn": ["a", "b"], "dependedOnBy": []},
    }
    for step_id, want in expected.items():
        response = client.get(
            f"/v1/workflows/{workflow_id}/steps/{step_id}/dependencies", headers=AUTH
        )
        assert response.status_code == 200, response.text
        got = response.json()
        assert set(got) == {"dependsOn", "dependedOnBy"}
        assert sorted(got["dependsOn"]) == want["dependsOn"]
        assert sorted(got["dependedOnBy"]) == want["dependedOnBy"]


def test_dependencies_of_an_unknown_step_or_workflow_are_a_404(client: TestClient) -> None:
    workflow_id = create(client, workflow())["id"]
    response = client.get(f"/v1/workflows/{workflow_id}/steps/zz/dependencies", headers=AUTH)
    assert "zz" in assert_problem(response, 404)["detail"]
    response = client.get("/v1/workflows/nope/steps/a/dependencies", headers=AUTH)
    assert "nope" in assert_problem(response, 404)["detail"]


# ------------------------------------------------------------------------------- list


def test_list_is_newest_first(client: TestClient) -> None:
    created = [create(client, workflow(name=f"w{i}"))["id"] for i in range(4)]
    response = client.get("/v1/workflows", headers=AUTH)
    assert response.status_code == 200, response.text
    page = response.json()
    assert set(page) >= {"items", "nextCursor"}
    assert page["nextCursor"] is None
    assert [w["id"] for w in page["items"]] == created[::-1]
    for item in page["items"]:
        assert {"id", "name", "status", "createdAt"} <= set(item)
        assert item["status"] in WORKFLOW_STATUSES
        assert_iso_utc(item["createdAt"])


def test_list_pages_through_every_workflow_once(client: TestClient) -> None:
    created = [create(client, workflow())["id"] for _ in range(7)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor is not None:
            params["cursor"] = cursor
        response = client.get("/v1/workflows", params=params, headers=AUTH)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= 3
        seen.extend(w["id"] for w in page["items"])
        pages += 1
        cursor = page["nextCursor"]
        if cursor is None:
            break
        assert pages < 10
    assert seen == created[::-1]
    assert pages == 3


def test_a_page_exactly_full_still_pages_correctly(client: TestClient) -> None:
    created = [create(client, workflow())["id"] for _ in range(4)]
    first = client.get("/v1/workflows", params={"limit": 2}, headers=AUTH).json()
    assert first["nextCursor"] is not None
    params = {"limit": 2, "cursor": first["nextCursor"]}
    second = client.get("/v1/workflows", params=params, headers=AUTH).json()
    assert [w["id"] for w in first["items"] + second["items"]] == created[::-1]
    if second["nextCursor"] is not None:
        params["cursor"] = second["nextCursor"]
        assert client.get("/v1/workflows", params=params, headers=AUTH).json()["items"] == []


def test_list_filters_by_status_and_name(client: TestClient) -> None:
    done = create(client, finishes_at_once(name="alpha"))["id"]
    failed = create(client, fails_at_once(name="beta"))["id"]
    running = create(client, parked(name="alpha"))["id"]
    wait_for_status(client, done, {"completed"})
    wait_for_status(client, failed, {"failed"})
    wait_for(
        lambda: get_workflow(client, running)["steps"][0]["status"] == "retrying",
        message="the parked step never reached retrying",
    )
    assert get_workflow(client, running)["status"] == "running"

    assert [w["id"] for w in list_all(client, status="completed")] == [done]
    assert [w["id"] for w in list_all(client, status="failed")] == [failed]
    assert [w["id"] for w in list_all(client, status="running")] == [running]
    assert list_all(client, status="cancelled") == []
    assert [w["id"] for w in list_all(client, name="alpha")] == [running, done]
    assert [w["id"] for w in list_all(client, name="beta")] == [failed]
    assert list_all(client, name="nobody") == []
    assert [w["id"] for w in list_all(client, name="alpha", status="completed")] == [done]


def test_list_filters_page_too(client: TestClient) -> None:
    wanted = [create(client, workflow(name="x"))["id"] for _ in range(3)]
    for _ in range(3):
        create(client, workflow(name="y"))
    seen: list[str] = []
    params: dict[str, Any] = {"name": "x", "limit": 2}
    while True:
        page = client.get("/v1/workflows", params=params, headers=AUTH).json()
        seen.extend(w["id"] for w in page["items"])
        if page["nextCursor"] is None:
            break
        params["cursor"] = page["nextCursor"]
    assert seen == wanted[::-1]


@pytest.mark.parametrize(
    ("params", "path"),
    [
        pytest.param({"status": "bogus"}, "status", id="status"),
        pytest.param({"status": "RUNNING"}, "status", id="status-case"),
        pytest.param({"limit": "0"}, "limit", id="limit-0"),
        pytest.param({"limit": "-1"}, "limit", id="limit-negative"),
        pytest.param({"limit": "abc"}, "limit", id="limit-abc"),
        pytest.param({"limit": "1.5"}, "limit", id="limit-fraction"),
        pytest.param({"limit": "501"}, "limit", id="limit-501"),
        pytest.param({"limit": "9" * 40}, "limit", id="limit-huge"),
        pytest.param({"cursor": "garbage"}, "cursor", id="cursor-garbage"),
        pytest.param({"cursor": "!!!"}, "cursor", id="cursor-punctuation"),
        pytest.param({"cursor": "é"}, "cursor", id="cursor-non-ascii"),
        pytest.param({"cursor": "W251bGwsICJ4Il0"}, "cursor", id="cursor-null-time"),
        pytest.param({"cursor": "eyJhIjogMX0"}, "cursor", id="cursor-object"),
        pytest.param({"cursor": "WzEsMiwzXQ"}, "cursor", id="cursor-three-items"),
    ],
)
def test_bad_list_parameters_are_a_422(
    client: TestClient, params: dict[str, str], path: str
) -> None:
    response = client.get("/v1/workflows", params=params, headers=AUTH)
    assert error_paths(response) == [path]


def test_a_name_longer_than_any_valid_one_matches_nothing(client: TestClient) -> None:
    create(client, workflow(name="x" * 200))
    response = client.get("/v1/workflows", params={"name": "x" * 201}, headers=AUTH)
    if response.status_code == 422:
        assert error_paths(response) == ["name"]
    else:
        assert response.status_code == 200, response.text
        assert response.json()["items"] == []
    assert len(list_all(client, name="x" * 200)) == 1


@pytest.mark.parametrize(
    ("created_at", "workflow_id"),
    [
        pytest.param("2026-01-01T00:00:00+00:00", "x" * 129, id="id-too-long"),
        pytest.param("2026-01-01T00:00:00+00:00", "a\u0000b", id="id-with-nul"),
        pytest.param("0001-01-01T00:00:00+01:00", "a", id="before-year-1-in-utc"),
        pytest.param("9999-12-31T23:59:59-14:00", "a", id="after-9999-in-utc"),
    ],
)
def test_a_cursor_naming_what_no_page_ends_with_is_a_422(
    any_db_client: TestClient, created_at: str, workflow_id: str
) -> None:
    params = {"cursor": cursor(created_at, workflow_id)}
    response = any_db_client.get("/v1/workflows", params=params, headers=AUTH)
    assert error_paths(response) == ["cursor"]


def test_a_name_with_a_nul_character_matches_nothing(any_db_client: TestClient) -> None:
    # Names are stored without NUL (PostgreSQL text cannot hold one).
    client = any_db_client
    response = client.get("/v1/workflows", params={"name": "a\u0000b"}, headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.json() == {"items": [], "nextCursor": None}


def test_every_bad_list_parameter_is_reported(client: TestClient) -> None:
    response = client.get(
        "/v1/workflows", params={"status": "x", "limit": "x", "cursor": "x"}, headers=AUTH
    )
    assert sorted(error_paths(response)) == ["cursor", "limit", "status"]


def test_limit_bounds_are_inclusive(client: TestClient) -> None:
    create(client, workflow())
    for limit in ("1", "500"):
        response = client.get("/v1/workflows", params={"limit": limit}, headers=AUTH)
        assert response.status_code == 200, response.text
        assert len(response.json()["items"]) == 1


# ----------------------------------------------------------------------------- events


def test_events_are_listed_oldest_first(client: TestClient) -> None:
    document = create(client, fails_at_once())
    workflow_id = document["id"]
    wait_for_status(client, workflow_id, FINISHED)
    response = client.get(f"/v1/workflows/{workflow_id}/events", headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    items = response.json()["items"]
    assert [e["type"] for e in items[:2]] == ["workflow.created", "workflow.started"]
    assert items[-1]["type"] == "workflow.failed"
    assert "step.failed" in [e["type"] for e in items]
    for item in items:
        assert set(item) >= EVENT_FIELDS
        assert item["workflowId"] == workflow_id
        assert_iso_utc(item["at"])
        assert isinstance(item["data"], dict)
    assert items[0]["stepId"] is None
    assert {e["stepId"] for e in items if e["type"].startswith("step.")} == {"a"}
    times = [e["at"] for e in items]
    assert times == sorted(times)
    ids = [e["id"] for e in items]
    assert len(set(map(str, ids))) == len(ids)


def test_events_come_in_pages(any_db_client: TestClient) -> None:
    client = any_db_client
    # Five skipped steps: created, started, five skips, completed.
    steps = [step(f"s{i}", when="false") for i in range(5)]
    workflow_id = create(client, workflow(*steps))["id"]
    wait_for_status(client, workflow_id, {"completed"})
    url = f"/v1/workflows/{workflow_id}/events"
    whole = client.get(url, headers=AUTH).json()
    assert whole["nextAfter"] is None
    assert len(whole["items"]) == 8
    pages, after = [], None
    while True:
        params = {"limit": 3} if after is None else {"limit": 3, "after": after}
        page = client.get(url, params=params, headers=AUTH).json()
        pages.append(page["items"])
        after = page["nextAfter"]
        if after is None:
            break
        assert after == page["items"][-1]["id"]
    assert [len(p) for p in pages] == [3, 3, 2]
    assert [e for p in pages for e in p] == whole["items"]
    # The stored data is sent as it is, and reads like the rest of the document.
    created = whole["items"][0]
    assert created["data"] == {"name": None, "steps": 5}
    assert created["workflowId"] == workflow_id
    assert_iso_utc(created["at"])
    last = whole["items"][-1]["id"]
    assert client.get(url, params={"after": last}, headers=AUTH).json() == {
        "items": [],
        "nextAfter": None,
    }
    exact = client.get(url, params={"limit": 8}, headers=AUTH).json()
    assert exact["nextAfter"] is None and len(exact["items"]) == 8
    assert client.get(url, params={"limit": "2.0"}, headers=AUTH).json()["nextAfter"] is not None


@pytest.mark.parametrize(
    ("params", "path"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 10_001}, "limit"),
        ({"limit": 2.5}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": "1_0"}, "limit"),
        ({"after": -1}, "after"),
        ({"after": "x"}, "after"),
        ({"after": 2**63}, "after"),
        ({"after": ""}, "after"),
    ],
)
def test_bad_event_page_parameters_are_a_422(
    client: TestClient, params: dict[str, Any], path: str
) -> None:
    workflow_id = create(client, finishes_at_once())["id"]
    response = client.get(f"/v1/workflows/{workflow_id}/events", params=params, headers=AUTH)
    assert error_paths(response) == [path]


def test_an_event_page_holds_up_to_ten_thousand(client: TestClient) -> None:
    workflow_id = create(client, finishes_at_once())["id"]
    response = client.get(
        f"/v1/workflows/{workflow_id}/events", params={"limit": 10_000}, headers=AUTH
    )
    assert response.status_code == 200, response.text


def test_events_of_a_new_workflow_start_with_created_and_started(client: TestClient) -> None:
    workflow_id = create(client, parked())["id"]
    items = client.get(f"/v1/workflows/{workflow_id}/events", headers=AUTH).json()["items"]
    assert [e["type"] for e in items[:2]] == ["workflow.created", "workflow.started"]


@pytest.mark.parametrize("headers", [AUTH, SSE], ids=["json", "event-stream"])
def test_events_of_an_unknown_workflow_are_a_404(
    client: TestClient, headers: dict[str, str]
) -> None:
    response = client.get("/v1/workflows/nope/events", headers=headers)
    assert_problem(response, 404)


def test_the_event_stream_of_a_finished_workflow_replays_it_and_ends(client: TestClient) -> None:
    workflow_id = create(client, fails_at_once())["id"]
    wait_for_status(client, workflow_id, {"failed"})
    listed = client.get(f"/v1/workflows/{workflow_id}/events", headers=AUTH).json()["items"]

    response = read_whole(client, f"/v1/workflows/{workflow_id}/events", SSE)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    assert "event: workflow.created\n" in response.text
    events = parse_sse(response.text)
    types = [e["event"] for e in events]
    assert types[:2] == ["workflow.created", "workflow.started"]
    assert types[-1] == "workflow.failed"
    assert types.index("step.failed") < types.index("workflow.failed")
    assert types == [e["type"] for e in listed]
    for event, item in zip(events, listed, strict=True):
        assert json.loads(event["data"]) == item
        assert event["id"] == str(item["id"])


def test_the_event_stream_resumes_after_last_event_id(client: TestClient) -> None:
    workflow_id = create(client, fails_at_once())["id"]
    wait_for_status(client, workflow_id, {"failed"})
    listed = client.get(f"/v1/workflows/{workflow_id}/events", headers=AUTH).json()["items"]
    resume_after = listed[1]["id"]
    response = read_whole(
        client,
        f"/v1/workflows/{workflow_id}/events",
        {**SSE, "Last-Event-ID": str(resume_after)},
    )
    assert response.status_code == 200, response.text
    events = parse_sse(response.text)
    assert [e["event"] for e in events] == [e["type"] for e in listed[2:]]


@pytest.mark.parametrize(
    "last_event_id",
    ["", "abc", "1.5", "+1", "1_0", "1; DROP TABLE events", "9223372036854775808", "1" + "0" * 30],
)
def test_a_bad_last_event_id_is_a_400(client: TestClient, last_event_id: str) -> None:
    workflow_id = create(client, fails_at_once())["id"]
    # Finished first, so that a stream answered by mistake ends instead of hanging.
    wait_for_status(client, workflow_id, FINISHED)
    response = read_whole(
        client,
        f"/v1/workflows/{workflow_id}/events",
        {**SSE, "Last-Event-ID": last_event_id},
    )
    assert_problem(response, 400)


# --------------------------------------------------------------------------- callbacks


def mint_token(
    client: TestClient, claim: CallbackClaim, *, lifetime: float, issued_ago: float = 0.0
) -> str:
    """A token made with the server's own key, as if issued ``issued_ago`` seconds ago."""
    store = client.app.state.runtime.store  # type: ignore[attr-defined]
    key = client.portal.call(store.server_secret, CALLBACK_TOKEN_SECRET)
    issued = time.time() - issued_ago
    return CallbackTokens(key, clock=lambda: issued).make(claim, lifetime=lifetime)


@pytest.mark.parametrize("suffix", ["", "/heartbeat"])
def test_an_expired_callback_token_is_gone(client: TestClient, suffix: str) -> None:
    workflow_id = create(client, parked(timeout=600))["id"]
    claim = CallbackClaim(workflow_id, "a", "run", 1)
    # Issued longer ago than the workflow's timeout (plus the clock leeway).
    token = mint_token(client, claim, lifetime=600, issued_ago=600 + CLOCK_LEEWAY + 5)

    response = client.post(f"/v1/callbacks/{token}{suffix}", json={"success": True})

    problem = assert_problem(response, 410)
    assert "expired" in problem["detail"]
    assert "10 minutes" in problem["detail"]
    assert get_workflow(client, workflow_id)["status"] == "running"


def test_an_expired_token_is_gone_before_its_body_is_looked_at(client: TestClient) -> None:
    token = mint_token(
        client, CallbackClaim("wf", "a", "run", 1), lifetime=60, issued_ago=MAX_LIFETIME
    )
    response = client.post(f"/v1/callbacks/{token}", content=b"not json")
    assert "expired" in assert_problem(response, 410)["detail"]


def test_a_token_within_its_lifetime_reaches_the_step(client: TestClient) -> None:
    # Not expired: the answer comes from the step (which no longer waits for it).
    workflow_id = create(client, fails_at_once())["id"]
    wait_for_status(client, workflow_id, FINISHED)
    token = mint_token(
        client, CallbackClaim(workflow_id, "a", "run", 1), lifetime=3600, issued_ago=3000
    )
    problem = assert_problem(client.post(f"/v1/callbacks/{token}", json={"success": True}), 410)
    assert "no longer accepted" in problem["detail"]
    assert "expired" not in problem["detail"]


def test_a_token_for_an_unknown_step_is_a_404(client: TestClient) -> None:
    token = mint_token(client, CallbackClaim("nope", "a", "run", 1), lifetime=3600)
    assert_problem(client.post(f"/v1/callbacks/{token}", json={"success": True}), 404)
    assert_problem(client.post(f"/v1/callbacks/{token}/heartbeat"), 404)


def test_a_forged_token_is_forbidden_even_when_old(client: TestClient) -> None:
    issued = time.time() - MAX_LIFETIME
    forged = CallbackTokens("not-the-servers-key", clock=lambda: issued).make(
        CallbackClaim("wf", "a", "run", 1), lifetime=1
    )
    problem = assert_problem(client.post(f"/v1/callbacks/{forged}", json={"success": True}), 403)
    assert "expired" not in problem["detail"]


# --------------------------------------------------------------------------- lifespan


def test_shutdown_while_deliveries_are_in_flight_ends(tmp_path: Path) -> None:
    # Steps retried without delay keep requests and their settlement going all the
    # time, so shutdown meets the dispatcher in the middle of a database call.
    for round_ in range(10):
        with running(tmp_path / f"round-{round_}") as test_client:
            steps = [step(f"s{i}", retries={"maxAttempts": 100, "delay": 0}) for i in range(5)]
            create(test_client, workflow(*steps))
            time.sleep(0.1)


def test_the_app_starts_again_on_the_same_database(tmp_path: Path) -> None:
    with running(tmp_path) as test_client:
        workflow_id = create(test_client, finishes_at_once(name="kept"))["id"]
        wait_for_status(test_client, workflow_id, FINISHED)
    with running(tmp_path) as test_client:
        assert get_workflow(test_client, workflow_id)["name"] == "kept"
        assert [w["id"] for w in list_all(test_client)] == [workflow_id]


# ------------------------------------------------------------------------ routing


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/nope", {}),
        ("/v1/nope", AUTH),
        ("/v1/workflows/a/b/c/d", AUTH),
        ("/v2/workflows", AUTH),
    ],
)
def test_an_unknown_route_is_a_404_problem(
    client: TestClient, path: str, headers: dict[str, str]
) -> None:
    assert_problem(client.get(path, headers=headers), 404)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/v1/workflows"),
        ("PUT", "/v1/workflows"),
        ("PATCH", "/v1/workflows/x"),
        ("POST", "/v1/workflows/x/events"),
        ("DELETE", "/v1/workflows/x/steps/a"),
        ("POST", "/healthz"),
        ("DELETE", "/readyz"),
    ],
)
def test_a_wrong_method_is_a_405_problem(client: TestClient, method: str, path: str) -> None:
    response = client.request(method, path, headers=AUTH)
    assert_problem(response, 405)
    assert "allow" in response.headers


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/v1/workflows", "GET, HEAD, POST"),
        ("/v1/workflows/x", "GET, HEAD"),
        ("/v1/workflows/x/cancel", "POST"),
        ("/healthz", "GET, HEAD"),
    ],
)
def test_a_405_allows_every_method_of_the_path(client: TestClient, path: str, allowed: str) -> None:
    response = client.request("DELETE", path, headers=AUTH)
    assert_problem(response, 405)
    assert response.headers["allow"] == allowed


# ---------------------------------------------------------------------- never a 5xx

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=16)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)
URLS = (
    st.sampled_from(
        [
            f"{HANDLER}/a",
            "http://handler.example:8080/b?x=1",
            "ftp://handler.example/",
            "http://127.0.0.1/x",
            "http://[::1]/",
            "http://user:pass@handler.example/",
            "https://",
            "https://handler.example:99999/",
            "http://0x7f.1/",
            "",
        ]
    )
    | st.text(max_size=24)
    | JSON_VALUES
)
STEP_IDS = st.sampled_from(["a", "b", "c"]) | st.text(max_size=6) | JSON_VALUES
NUMBERS = (
    st.integers(min_value=-5, max_value=3_000_000)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.integers()
    | JSON_VALUES
)
RETRIES = st.fixed_dictionaries(
    {},
    optional={
        "maxAttempts": NUMBERS,
        "backoff": st.sampled_from(["fixed", "linear", "exponential", "bogus"]) | JSON_VALUES,
        "delay": NUMBERS,
        "maxDelay": NUMBERS,
        "jitter": st.booleans() | JSON_VALUES,
    },
)
STEPS = st.fixed_dictionaries(
    {"id": STEP_IDS, "url": URLS},
    optional={
        "dependsOn": st.lists(st.sampled_from(["a", "b", "c", "zz"]), max_size=3) | JSON_VALUES,
        "retries": RETRIES | JSON_VALUES,
        "timeout": NUMBERS,
        "compensation": URLS,
        "when": st.sampled_from(["true", "context.x > 1", "steps.a.status == 'completed'", "(("])
        | st.text(max_size=16)
        | JSON_VALUES,
        "continueOnFailure": st.booleans() | JSON_VALUES,
        "parallel": st.booleans() | JSON_VALUES,
        "bogus": JSON_VALUES,
    },
)
WORKFLOWS = st.fixed_dictionaries(
    {"steps": st.lists(STEPS, max_size=4) | JSON_VALUES},
    optional={
        "id": STEP_IDS,
        "name": st.text(max_size=10) | JSON_VALUES,
        "context": st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=3) | JSON_VALUES,
        "onComplete": URLS,
        "onError": URLS,
        "timeout": NUMBERS,
        "saga": st.booleans() | JSON_VALUES,
        "failFast": st.booleans() | JSON_VALUES,
    },
)


def assert_not_a_server_error(response: httpx.Response) -> None:
    assert 200 <= response.status_code < 500, response.text
    if response.status_code >= 400:
        assert_problem(response, response.status_code)


def test_random_json_is_never_a_server_error(tmp_path: Path) -> None:
    with running(tmp_path) as test_client:

        @settings(max_examples=50, deadline=None)
        @given(body=WORKFLOWS | JSON_VALUES)
        def post(body: Any) -> None:
            response = test_client.post("/v1/workflows", json=body, headers=AUTH)
            assert_not_a_server_error(response)

        post()


def test_random_bytes_are_never_a_server_error(tmp_path: Path) -> None:
    with running(tmp_path) as test_client:

        @settings(max_examples=50, deadline=None)
        @given(content=st.binary(max_size=256))
        def post(content: bytes) -> None:
            response = test_client.post("/v1/workflows", content=content, headers=AUTH)
            assert_not_a_server_error(response)

        post()
