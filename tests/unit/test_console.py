"""The console's routes in-process: login, sessions, CSRF, namespaces, pages and JSON.

Each test gets a fresh app on its own SQLite database (Starlette's TestClient
runs the lifespan). Step URLs name hosts under ``.example`` that never resolve,
so every attempt fails at once with a connection error: enough to have attempts,
events and finished workflows to look at.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import re
import threading
import time
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook
from starlette.datastructures import Secret
from starlette.exceptions import StarletteDeprecationWarning

from app.console.sessions import SESSION_COOKIE, Sessions
from app.main import CALLBACK_TOKEN_SECRET, create_app
from app.settings import Settings
from app.store import Store
from app.tenants import scoped_id
from app.tokens import CallbackTokens
from baton.signing import generate_secret

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

ENV_KEY = "bk_console-test-key"
HANDLER = "https://handler.example"
SIGNING_SECRET = generate_secret()
SHUTDOWN_SECONDS = 15.0
SSE = {"Accept": "text/event-stream"}


class Console:
    """A running app, and a browser-like client of it (cookies kept between requests)."""

    def __init__(self, client: TestClient) -> None:
        self.client = client

    @property
    def store(self) -> Store:
        store: Store = self.client.app.state.runtime.store  # type: ignore[attr-defined]
        return store

    def new_key(self, namespace: str) -> tuple[str, str]:
        info, key = self.client.portal.call(functools.partial(self.store.create_api_key, namespace))
        return info.id, str(key)

    def revoke(self, key_id: str) -> None:
        self.client.portal.call(self.store.revoke_api_key, key_id)

    def login_form(self, next_path: str | None = None) -> str:
        response = self.client.get("/ui/login", params={"next": next_path} if next_path else None)
        assert response.status_code == 200
        match = re.search(r'name="csrf" value="([^"]+)"', response.text)
        assert match
        return match.group(1)

    def login(self, key: str, next_path: str | None = None) -> httpx.Response:
        token = self.login_form(next_path)
        data = {"csrf": token, "key": key}
        if next_path:
            data["next"] = next_path
        return self.client.post("/ui/login", data=data, follow_redirects=False)

    def csrf(self) -> str:
        page = self.client.get("/ui/workflows")
        match = re.search(r'<meta name="csrf-token" content="([^"]+)">', page.text)
        assert match, page.text[:500]
        return match.group(1)

    def create(self, body: dict[str, Any], key: str = ENV_KEY) -> dict[str, Any]:
        response = self.client.post(
            "/v1/workflows", json=body, headers={"Authorization": f"Bearer {key}"}
        )
        assert response.status_code == 201, response.text
        document: dict[str, Any] = response.json()
        return document

    def wait(self, workflow_id: str, statuses: set[str], key: str = ENV_KEY) -> dict[str, Any]:
        deadline = time.monotonic() + 10
        while True:
            document: dict[str, Any] = self.client.get(
                f"/v1/workflows/{workflow_id}", headers={"Authorization": f"Bearer {key}"}
            ).json()
            if document["status"] in statuses or time.monotonic() > deadline:
                assert document["status"] in statuses, document
                return document
            time.sleep(0.05)


@contextlib.contextmanager
def running(tmp_path: Path, **overrides: Any) -> Iterator[Console]:
    values: dict[str, Any] = {
        "database_url": f"sqlite://{tmp_path}/db.sqlite3",
        "data_dir": tmp_path,
        "api_keys": (Secret(ENV_KEY),),
        "signing_secrets": (Secret(SIGNING_SECRET),),
    }
    settings = Settings(**{**values, **overrides})
    client = TestClient(create_app(settings), raise_server_exceptions=False)
    client.__enter__()
    try:
        yield Console(client)
    finally:
        closer = threading.Thread(target=client.__exit__, args=(None, None, None), daemon=True)
        closer.start()
        closer.join(SHUTDOWN_SECONDS)
        if closer.is_alive():
            pytest.fail(f"the app did not shut down within {SHUTDOWN_SECONDS} s")


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    with running(tmp_path) as app:
        yield app


def failing(workflow_id: str, **fields: Any) -> dict[str, Any]:
    """A workflow whose one attempt fails at once (the host never resolves)."""
    step = {"id": "a", "url": f"{HANDLER}/a", "retries": {"maxAttempts": 1}}
    return {"id": workflow_id, "steps": [step], **fields}


def waiting(workflow_id: str, **fields: Any) -> dict[str, Any]:
    """A workflow that stays running: its step waits an hour before a second attempt."""
    step = {
        "id": "a",
        "url": f"{HANDLER}/a",
        "retries": {"maxAttempts": 2, "delay": 3600, "jitter": False},
    }
    return {"id": workflow_id, "steps": [step], "context": {"n": 1}, **fields}


# --------------------------------------------------------------------------- entry


def test_the_root_leads_a_browser_to_the_console(console: Console) -> None:
    response = console.client.get("/", follow_redirects=False)
    assert response.status_code == 302 and response.headers["location"] == "/ui"
    response = console.client.get("/ui", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/ui/login"
    page = console.client.get("/", follow_redirects=True)
    assert page.status_code == 200 and 'name="key"' in page.text


def test_pages_need_a_session_and_come_back_after_login(console: Console) -> None:
    response = console.client.get("/ui/workflows/x?step=a", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/login?next=%2Fui%2Fworkflows%2Fx%3Fstep%3Da"
    login = console.login(ENV_KEY, next_path="/ui/workflows/x?step=a")
    assert login.status_code == 303 and login.headers["location"] == "/ui/workflows/x?step=a"


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", "/v1/x", "/ui/\\x"])
def test_after_login_only_console_paths_are_followed(console: Console, target: str) -> None:
    login = console.login(ENV_KEY, next_path=target)
    assert login.headers["location"] == "/ui/workflows"


def test_pages_carry_a_strict_content_security_policy(console: Console) -> None:
    page = console.client.get("/ui/login")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert page.headers["cache-control"] == "no-store"
    # Every asset the page names is served from this origin.
    for url in re.findall(r'(?:href|src)="(/ui/static/[^"]+)"', page.text):
        asset = console.client.get(url)
        assert asset.status_code == 200 and asset.headers["cache-control"] == "no-cache"


# --------------------------------------------------------------------------- login


def test_a_right_key_gives_a_signed_http_only_strict_cookie_without_the_key(
    console: Console,
) -> None:
    response = console.login(ENV_KEY)
    assert response.status_code == 303
    cookie = next(
        v for k, v in response.headers.multi_items() if k == "set-cookie" and SESSION_COOKIE in v
    )
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "path", "max-age"} <= attributes
    assert "samesite=strict" in cookie.lower()
    assert "Max-Age=43200" in cookie  # BATON_UI_SESSION_HOURS, 12 by default
    assert ENV_KEY not in cookie and ENV_KEY.removeprefix("bk_") not in cookie
    assert console.client.get("/ui/workflows").status_code == 200


def test_a_wrong_key_is_refused_with_a_message(console: Console) -> None:
    response = console.login("bk_not-a-key")
    assert response.status_code == 401
    assert "not valid" in response.text
    assert SESSION_COOKIE not in response.headers.get("set-cookie", "")
    assert console.client.get("/ui/workflows", follow_redirects=False).status_code == 303


def test_the_login_form_needs_its_csrf_token(console: Console) -> None:
    console.login_form()
    response = console.client.post("/ui/login", data={"key": ENV_KEY, "csrf": "forged"})
    assert response.status_code == 403 and "expired" in response.text
    fresh = TestClient(console.client.app)
    response = fresh.post("/ui/login", data={"key": ENV_KEY, "csrf": "x"})
    assert response.status_code == 403


def test_a_form_of_another_type_is_a_400(console: Console) -> None:
    response = console.client.post("/ui/login", json={"key": ENV_KEY})
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"


def test_logout_needs_the_csrf_token_and_ends_the_session(console: Console) -> None:
    console.login(ENV_KEY)
    assert console.client.post("/ui/logout", data={"csrf": "nope"}).status_code == 403
    response = console.client.post(
        "/ui/logout", data={"csrf": console.csrf()}, follow_redirects=False
    )
    assert response.status_code == 303
    assert console.client.get("/ui/workflows", follow_redirects=False).status_code == 303


def test_a_tampered_cookie_is_no_session(console: Console) -> None:
    console.login(ENV_KEY)
    value = console.client.cookies[SESSION_COOKIE]
    console.client.cookies.set(SESSION_COOKIE, value[:-2] + ("AA" if value[-2:] != "AA" else "BB"))
    assert console.client.get("/ui/workflows", follow_redirects=False).status_code == 303
    assert console.client.get("/v1/workflows").status_code == 401


async def test_a_session_ends_after_its_hours() -> None:
    async def nothing(_: str) -> None:
        return None

    sessions = Sessions(env_keys=["k"], hours=1 / 3600, find_key=nothing, key_namespace=nothing)
    sessions.start("secret")
    session = await sessions.login("k")
    assert session is not None
    value = sessions.cookie_value(session)
    assert await sessions.load(value) == session
    await asyncio.sleep(2.1)
    assert await sessions.load(value) is None


def test_a_session_of_an_environment_key_ends_when_the_key_is_removed(tmp_path: Path) -> None:
    with running(tmp_path) as app:
        app.login(ENV_KEY)
        cookie = app.client.cookies[SESSION_COOKIE]
    with running(tmp_path, api_keys=(Secret("bk_another-key"),)) as app:
        app.client.cookies.set(SESSION_COOKIE, cookie)
        assert app.client.get("/v1/workflows").status_code == 401
    with running(tmp_path) as app:
        app.client.cookies.set(SESSION_COOKIE, cookie)
        assert app.client.get("/v1/workflows").status_code == 200


def test_a_revoked_keys_session_stops_at_once(console: Console) -> None:
    key_id, key = console.new_key("acme")
    assert console.login(key).status_code == 303
    assert console.client.get("/v1/workflows").status_code == 200
    console.revoke(key_id)
    assert console.client.get("/v1/workflows").status_code == 401
    assert console.client.get("/ui/workflows", follow_redirects=False).status_code == 303
    assert console.client.get("/ui/api/workflows").status_code == 401


# --------------------------------------------------------------------------- the API with a session


def test_the_api_accepts_the_session_and_actions_need_the_csrf_header(console: Console) -> None:
    console.create(waiting("w1"))
    console.login(ENV_KEY)
    assert console.client.get("/v1/workflows/w1").json()["status"] == "running"
    refused = console.client.post("/v1/workflows/w1/cancel", json={})
    assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
    forged = console.client.post(
        "/v1/workflows/w1/cancel", json={}, headers={"X-CSRF-Token": "forged"}
    )
    assert forged.status_code == 403
    done = console.client.post(
        "/v1/workflows/w1/cancel", json={}, headers={"X-CSRF-Token": console.csrf()}
    )
    assert done.status_code == 200 and done.json()["status"] == "cancelled"


def test_a_bearer_key_still_wins_over_a_session(console: Console) -> None:
    console.login(ENV_KEY)
    response = console.client.get("/v1/workflows", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401


def test_the_event_stream_refuses_a_request_with_neither_session_nor_key(
    console: Console,
) -> None:
    console.create(failing("f1"))
    console.wait("f1", {"failed"})
    anonymous = console.client.get("/v1/workflows/f1/events", headers=SSE)
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"] == "application/problem+json"
    console.login(ENV_KEY)
    with console.client.stream("GET", "/v1/workflows/f1/events", headers=SSE) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        text = "".join(stream.iter_text())
    assert "event: workflow.failed" in text


# --------------------------------------------------------------------------- namespaces


def test_another_namespaces_workflow_is_a_404_in_the_console(console: Console) -> None:
    console.create(waiting("mine"))
    _, acme_key = console.new_key("acme")
    console.login(acme_key)
    page = console.client.get("/ui/workflows/mine")
    assert page.status_code == 404 and "No workflow" in page.text
    for path in ("timeline", "events", "callbacks", "steps/a/request?attempt=1"):
        response = console.client.get(f"/ui/api/workflows/mine/{path}")
        assert response.status_code == 404, path
    assert console.client.get("/v1/workflows/mine").status_code == 404
    assert console.client.get("/v1/workflows/mine/events", headers=SSE).status_code == 404
    listed = console.client.get("/ui/api/workflows").json()
    assert listed["items"] == [] and sum(listed["counts"].values()) == 0
    assert "mine" not in console.client.get("/ui/workflows").text


def test_each_namespace_sees_its_own_in_the_console(console: Console) -> None:
    _, acme_key = console.new_key("acme")
    console.create(waiting("shared-id"))
    console.create(waiting("shared-id", context={"tenant": "acme"}), key=acme_key)
    console.login(acme_key)
    page = console.client.get("/ui/workflows/shared-id")
    assert page.status_code == 200 and "acme" in page.text
    assert console.client.get("/ui/workflows").text.count('data-id="shared-id"') == 1


def test_console_json_routes_need_a_session(console: Console) -> None:
    console.create(waiting("w"))
    for path in ("/ui/api/workflows", "/ui/api/workflows/w/timeline", "/ui/api/workflows/w/events"):
        response = console.client.get(path, headers={"Authorization": f"Bearer {ENV_KEY}"})
        assert response.status_code == 401, path


# --------------------------------------------------------------------------- pages and data


def test_the_workflows_page_filters_searches_and_pages(console: Console) -> None:
    for i in range(55):
        console.create(waiting(f"order-{i:02d}", name="orders" if i % 2 else "refunds"))
    console.create(failing("broken-1", name="orders"))
    console.wait("broken-1", {"failed"})
    console.login(ENV_KEY)
    page = console.client.get("/ui/workflows")
    assert page.text.count('class="row-check"') == 50 and "Older" in page.text
    older = re.search(r'href="(/ui/workflows\?cursor=[^"]+)" rel="next"', page.text)
    assert older
    rest = console.client.get(older.group(1).replace("&amp;", "&"))
    assert rest.text.count('class="row-check"') == 6
    failed = console.client.get("/ui/workflows", params={"status": "failed"})
    assert failed.text.count('class="row-check"') == 1 and "broken-1" in failed.text
    named = console.client.get("/ui/workflows", params={"name": "refunds"})
    assert named.text.count('class="row-check"') == 28
    prefix = console.client.get("/ui/workflows", params={"q": "order-1"})
    assert prefix.text.count('class="row-check"') == 10
    exact = console.client.get("/ui/workflows", params={"q": "order-07"}, follow_redirects=False)
    assert exact.status_code == 303 and exact.headers["location"] == "/ui/workflows/order-07"
    recent = console.client.get("/ui/workflows", params={"range": "1h"})
    assert recent.text.count('class="row-check"') == 50
    future = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    later = console.client.get("/ui/workflows", params={"range": "custom", "from": future})
    assert 'class="row-check"' not in later.text and "No workflow matches" in later.text
    data = console.client.get("/ui/api/workflows", params={"name": "orders"}).json()
    assert data["counts"]["running"] == 27 and data["counts"]["failed"] == 1


@pytest.mark.parametrize(
    "params",
    [{"status": "done"}, {"range": "1y"}, {"from": "yesterday"}, {"q": "a b"}, {"cursor": "x"}],
)
def test_bad_filters_are_explained_not_failed(console: Console, params: dict[str, str]) -> None:
    console.login(ENV_KEY)
    page = console.client.get("/ui/workflows", params=params)
    assert page.status_code == 422 and "Check the filters" in page.text
    data = console.client.get("/ui/api/workflows", params=params)
    assert data.status_code == 422
    assert data.headers["content-type"] == "application/problem+json"


def test_the_workflow_page_draws_every_step_with_its_status(console: Console) -> None:
    body = {
        "id": "shop",
        "name": "order-processing",
        "steps": [
            {"id": "validate", "url": f"{HANDLER}/v", "retries": {"maxAttempts": 1}},
            {"id": "charge", "url": f"{HANDLER}/c", "dependsOn": ["validate"]},
        ],
        "onError": f"{HANDLER}/hooks/error",
    }
    console.create(body)
    console.wait("shop", {"failed"})
    console.login(ENV_KEY)
    page = console.client.get("/ui/workflows/shop")
    assert page.status_code == 200
    assert 'data-workflow-status="failed"' in page.text
    assert re.search(r'data-step-id="validate" data-status="failed"', page.text)
    assert re.search(r'data-step-id="charge" data-status="cancelled"', page.text)
    assert 'data-callback="on_error"' in page.text
    data = json.loads(re.search(r'id="wf-data">(.*?)</script>', page.text, re.S).group(1))  # type: ignore[union-attr]
    assert data["workflowId"] == "shop" and data["lastEventId"] > 0
    assert [s[:2] for s in data["steps"]] == [["validate", "failed"], ["charge", "cancelled"]]
    missing = console.client.get("/ui/workflows/nope")
    assert missing.status_code == 404


def test_a_large_workflow_is_drawn_as_groups(console: Console) -> None:
    steps = [{"id": "start", "url": f"{HANDLER}/s", "retries": {"maxAttempts": 2, "delay": 3600}}]
    steps += [{"id": f"i{n}", "url": f"{HANDLER}/i", "dependsOn": ["start"]} for n in range(2000)]
    console.create({"id": "big", "steps": steps})
    console.login(ENV_KEY)
    page = console.client.get("/ui/workflows/big")
    assert page.status_code == 200
    assert page.text.count("data-step-id=") == 1  # start; the 2,000 are one group
    assert page.text.count("data-group-id=") == 1 and "2,000 steps" in page.text


def test_timeline_events_and_callbacks_data(console: Console) -> None:
    console.create(failing("f", onError=f"{HANDLER}/hooks/e"))
    console.wait("f", {"failed"})
    console.login(ENV_KEY)
    timeline = console.client.get("/ui/api/workflows/f/timeline").json()
    assert [row[:3] for row in timeline["attempts"]] == [["a", "step", 1]]
    events = console.client.get("/ui/api/workflows/f/events").json()
    ids = [e["id"] for e in events["items"]]
    assert ids == sorted(ids, reverse=True) and events["nextBefore"] is None
    older = console.client.get(f"/ui/api/workflows/f/events?before={ids[0]}").json()
    assert [e["id"] for e in older["items"]] == ids[1:]
    bad = console.client.get("/ui/api/workflows/f/events?before=soon")
    assert bad.status_code == 422
    # The onError request fails 5 times, with exponential backoff between the tries
    # (up to 1 + 2 + 4 + 8 s): it fails for good within about 15 s.
    deadline = time.monotonic() + 40
    while True:
        callbacks = console.client.get("/ui/api/workflows/f/callbacks").json()
        if callbacks["states"]["on_error"] == "failed" or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert callbacks["states"] == {"on_complete": None, "on_error": "failed"}
    assert callbacks["attempts"] and callbacks["attempts"][0]["kind"] == "on_error"


def test_the_request_of_an_attempt_is_rebuilt_exactly_and_signed(console: Console) -> None:
    console.create(failing("r", context={"orderId": "o-1"}))
    console.wait("r", {"failed"})
    console.login(ENV_KEY)
    step = console.client.get("/v1/workflows/r/steps/a").json()
    attempt = step["attemptLog"][0]
    data = console.client.get("/ui/api/workflows/r/steps/a/request?attempt=1").json()
    assert data["available"] and data["url"] == f"{HANDLER}/a"
    body = json.loads(data["body"])
    assert body["workflowId"] == "r" and body["stepId"] == "a" and body["attempt"] == 1
    assert body["context"] == {"orderId": "o-1"} and body["previousSteps"] == {}
    started = datetime.fromisoformat(attempt["startedAt"])
    assert datetime.fromisoformat(body["deadline"]) == started + timedelta(seconds=300)
    headers = data["headers"]
    assert headers["webhook-id"] == attempt["webhookId"]
    assert headers["webhook-timestamp"] == str(int(started.timestamp()))
    # Signed with the server's secret, as the handler received it.
    Webhook(SIGNING_SECRET).verify(data["body"], headers)
    # The callback token is the one the attempt carried: it names this attempt of this run.
    token_key = console.client.portal.call(console.store.server_secret, CALLBACK_TOKEN_SECRET)
    claim = CallbackTokens(token_key).load(body["callbackUrl"].rsplit("/", 1)[1])
    assert (claim.workflow_id, claim.step_id, claim.attempt) == (scoped_id("default", "r"), "a", 1)
    # The curl command is signed now, so a handler accepts it.
    assert data["curl"].startswith("curl -sS -X POST")
    assert f"webhook-id: {attempt['webhookId']}" in data["curl"]
    assert data["body"] in data["curl"]
    for params in ("attempt=9", "attempt=x", "attempt=1&kind=on_error"):
        response = console.client.get(f"/ui/api/workflows/r/steps/a/request?{params}")
        assert response.status_code in (404, 422), params
