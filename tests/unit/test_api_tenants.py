"""Namespaces over the HTTP API: keys stored in the database, isolation, scoped ids.

Keys from ``BATON_API_KEYS`` belong to the ``default`` namespace; keys created in
the database belong to theirs. A workflow of another namespace answers exactly
what a missing workflow answers, on every endpoint.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import sqlite3
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.datastructures import Secret
from starlette.exceptions import StarletteDeprecationWarning
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from app.api import BearerAuth
from app.errors import StoreError
from app.main import create_app
from app.settings import Settings
from app.store import Store
from baton.signing import generate_secret

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

ENV_KEY = "env-key"
PROBLEM = "application/problem+json"
#: Never resolves: deliveries fail at once with a connection error.
HANDLER = "https://handler.example"
SHUTDOWN_SECONDS = 15.0


class Tenants:
    """A running app with one stored key per namespace, and requests made with them."""

    def __init__(self, client: TestClient, database: Path) -> None:
        self.client = client
        self.database = database
        self.keys: dict[str, str] = {"default": ENV_KEY}

    @property
    def store(self) -> Store:
        store: Store = self.client.app.state.runtime.store  # type: ignore[attr-defined]
        return store

    def new_key(self, namespace: str) -> tuple[str, str]:
        """Create a stored key of ``namespace``: (its id, the key)."""
        info, key = self.client.portal.call(functools.partial(self.store.create_api_key, namespace))
        self.keys.setdefault(namespace, str(key))
        return info.id, str(key)

    def auth(self, namespace: str) -> dict[str, str]:
        if namespace not in self.keys:
            self.new_key(namespace)
        return {"Authorization": f"Bearer {self.keys[namespace]}"}

    def request(self, namespace: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**self.auth(namespace), **kwargs.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kwargs)

    def create(self, namespace: str, body: dict[str, Any], **headers: str) -> httpx.Response:
        return self.request(namespace, "POST", "/v1/workflows", json=body, headers=headers)

    def list_ids(self, namespace: str, **params: Any) -> list[str]:
        response = self.request(namespace, "GET", "/v1/workflows", params=params)
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]


@contextlib.contextmanager
def running(tmp_path: Path) -> Iterator[Tenants]:
    database = tmp_path / "db.sqlite3"
    app = create_app(
        Settings(
            database_url=f"sqlite://{database}",
            data_dir=tmp_path,
            api_keys=(Secret(ENV_KEY),),
            signing_secrets=(Secret(generate_secret()),),
        )
    )
    client = TestClient(app, raise_server_exceptions=False)
    client.__enter__()
    try:
        yield Tenants(client, database)
    finally:
        closer = threading.Thread(target=client.__exit__, args=(None, None, None), daemon=True)
        closer.start()
        closer.join(SHUTDOWN_SECONDS)
        if closer.is_alive():
            pytest.fail(f"the app did not shut down within {SHUTDOWN_SECONDS} s")


@pytest.fixture
def tenants(tmp_path: Path) -> Iterator[Tenants]:
    with running(tmp_path) as running_tenants:
        yield running_tenants


def workflow(context: Any = None, **fields: Any) -> dict[str, Any]:
    """A workflow that stays running: its step waits an hour before a second attempt."""
    step = {
        "id": "a",
        "url": f"{HANDLER}/a",
        "retries": {"maxAttempts": 2, "delay": 3600, "jitter": False},
    }
    return {"steps": [step], "context": context or {}, **fields}


def created(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    document: dict[str, Any] = response.json()
    return document


# --------------------------------------------------------------------------- isolation


#: Every endpoint that names a workflow, with what its owner gets.
WORKFLOW_ENDPOINTS = [
    ("GET", "/v1/workflows/{id}", {}, 200),
    ("GET", "/v1/workflows/{id}/steps/a", {}, 200),
    ("GET", "/v1/workflows/{id}/steps/a/dependencies", {}, 200),
    ("GET", "/v1/workflows/{id}/events", {}, 200),
    ("POST", "/v1/workflows/{id}/retry", {"json": {}}, 409),
    ("POST", "/v1/workflows/{id}/steps/a/retry", {"json": {}}, 409),
    ("POST", "/v1/workflows/{id}/cancel", {"json": {}}, 200),
]


def test_another_namespaces_workflow_is_exactly_a_missing_one(tenants: Tenants) -> None:
    # What beta (and default) get for order-1 before it exists anywhere ...
    before = {
        (namespace, method, path): tenants.request(
            namespace, method, path.format(id="order-1"), **kw
        )
        for namespace in ("beta", "default")
        for method, path, kw, _ in WORKFLOW_ENDPOINTS
    }
    created(tenants.create("acme", workflow({"owner": "acme"}, id="order-1")))
    # ... is what they get once acme has it: same status, type and body, byte for byte.
    for (namespace, method, path), earlier in before.items():
        kw = next(k for m, p, k, _ in WORKFLOW_ENDPOINTS if (m, p) == (method, path))
        now = tenants.request(namespace, method, path.format(id="order-1"), **kw)
        assert earlier.status_code == now.status_code == 404, (namespace, path, now.text)
        assert now.headers["content-type"].startswith(PROBLEM)
        assert now.content == earlier.content, (namespace, method, path)
        assert "acme" not in now.text
    # The owner reaches every endpoint (cancel last: it ends the workflow).
    for method, path, kw, status in WORKFLOW_ENDPOINTS:
        response = tenants.request("acme", method, path.format(id="order-1"), **kw)
        assert response.status_code == status, (method, path, response.text)


def test_the_event_stream_of_another_namespace_is_a_404(tenants: Tenants) -> None:
    created(tenants.create("acme", workflow(id="streamed")))
    sse = {"Accept": "text/event-stream"}
    response = tenants.request("beta", "GET", "/v1/workflows/streamed/events", headers=sse)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith(PROBLEM)
    # The owner's stream works (cancel first so that it ends).
    tenants.request("acme", "POST", "/v1/workflows/streamed/cancel", json={})
    own = tenants.request("acme", "GET", "/v1/workflows/streamed/events", headers=sse)
    assert own.status_code == 200
    assert own.headers["content-type"].startswith("text/event-stream")
    assert '"workflowId":"streamed"' in own.text


def test_the_default_namespace_cannot_see_other_namespaces_and_back(tenants: Tenants) -> None:
    created(tenants.create("default", workflow(id="mine")))
    created(tenants.create("acme", workflow(id="theirs")))
    assert tenants.request("acme", "GET", "/v1/workflows/mine").status_code == 404
    assert tenants.request("default", "GET", "/v1/workflows/theirs").status_code == 404
    assert tenants.request("default", "GET", "/v1/workflows/mine").status_code == 200


def test_each_namespace_lists_only_its_own_workflows(tenants: Tenants) -> None:
    for namespace in ("default", "acme", "beta"):
        for n in range(3):
            created(tenants.create(namespace, workflow(id=f"{namespace}-{n}")))
    for namespace in ("default", "acme", "beta"):
        assert sorted(tenants.list_ids(namespace)) == [f"{namespace}-{n}" for n in range(3)]
    assert tenants.list_ids("empty") == []


def test_a_namespace_pages_through_its_own_workflows_only(tenants: Tenants) -> None:
    for n in range(5):
        created(tenants.create("acme", workflow(id=f"w{n}")))
        created(tenants.create("beta", workflow(id=f"w{n}")))
        created(tenants.create("default", workflow(id=f"w{n}")))
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = tenants.request("acme", "GET", "/v1/workflows", params=params).json()
        seen.extend(item["id"] for item in page["items"])
        cursor = page["nextCursor"]
        if cursor is None:
            break
        # The cursor names the public id only.
        assert "acme" not in cursor
    assert sorted(seen) == [f"w{n}" for n in range(5)]


def test_the_same_id_in_two_namespaces_is_two_workflows(tenants: Tenants) -> None:
    a = created(tenants.create("acme", workflow({"owner": "acme"}, id="order-1")))
    b = created(tenants.create("beta", workflow({"owner": "beta"}, id="order-1")))
    assert a["id"] == b["id"] == "order-1"
    for namespace in ("acme", "beta"):
        document = tenants.request(namespace, "GET", "/v1/workflows/order-1").json()
        assert document["context"] == {"owner": namespace}
    # Each namespace's own idempotency rules still hold.
    again = tenants.create("beta", workflow({"owner": "beta"}, id="order-1"))
    assert again.status_code == 200
    assert again.json()["context"] == {"owner": "beta"}
    conflict = tenants.create("beta", workflow({"owner": "someone else"}, id="order-1"))
    assert conflict.status_code == 409
    assert conflict.headers["content-type"].startswith(PROBLEM)
    assert "acme" not in conflict.text
    assert tenants.request("default", "GET", "/v1/workflows/order-1").status_code == 404


def test_idempotency_keys_are_per_namespace(tenants: Tenants) -> None:
    key = {"Idempotency-Key": "charge-42"}
    a = created(tenants.create("acme", workflow({"n": 1}), **key))
    b = created(tenants.create("beta", workflow({"n": 2}), **key))
    d = created(tenants.create("default", workflow({"n": 3}), **key))
    assert len({a["id"], b["id"], d["id"]}) == 3
    repeat = tenants.create("beta", workflow({"n": 2}), **key)
    assert repeat.status_code == 200
    assert repeat.json()["id"] == b["id"]
    assert tenants.create("beta", workflow({"n": 9}), **key).status_code == 409


def test_a_key_that_looks_like_another_namespaces_cannot_reach_it(tenants: Tenants) -> None:
    created(tenants.create("acme", workflow({"n": 1}), **{"Idempotency-Key": "k"}))
    # The default namespace's keys may contain "/"; they never alias a namespace's.
    other = created(tenants.create("default", workflow({"n": 2}), **{"Idempotency-Key": "acme/k"}))
    assert other["context"] == {"n": 2}


# A tab is allowed in a header value; the separator of scoped keys (U+001F) is not.
@pytest.mark.parametrize("value", ["a\x1fb", "nul\x00", "\x7f"])
def test_an_idempotency_key_with_control_characters_is_a_422(tenants: Tenants, value: str) -> None:
    response = tenants.create("acme", workflow(), **{"Idempotency-Key": value})
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["path"] == "Idempotency-Key"


def test_documents_and_events_show_the_public_id(tenants: Tenants) -> None:
    response = tenants.create("acme", workflow(id="order-7"))
    document = created(response)
    assert document["id"] == "order-7"
    assert response.headers["location"] == "/v1/workflows/order-7"
    assert tenants.list_ids("acme") == ["order-7"]
    events = tenants.request("acme", "GET", "/v1/workflows/order-7/events").json()["items"]
    assert events and {e["workflowId"] for e in events} == {"order-7"}
    generated = created(tenants.create("acme", workflow()))
    assert generated["id"].startswith("wf_") and "/" not in generated["id"]
    cancelled = tenants.request("acme", "POST", "/v1/workflows/order-7/cancel", json={})
    assert cancelled.json()["id"] == "order-7"
    refused = tenants.request("acme", "POST", "/v1/workflows/order-7/cancel", json={})
    assert refused.status_code == 409
    assert "'order-7'" in refused.json()["detail"] and "acme" not in refused.text


# --------------------------------------------------------------------------- keys


def test_a_stored_key_works_and_a_revoked_one_is_refused_at_once(tenants: Tenants) -> None:
    key_id, key = tenants.new_key("acme")
    headers = {"Authorization": f"Bearer {key}"}
    assert tenants.client.get("/v1/workflows", headers=headers).status_code == 200
    tenants.client.portal.call(tenants.store.revoke_api_key, key_id)
    refused = tenants.client.get("/v1/workflows", headers=headers)
    assert refused.status_code == 401
    assert refused.headers["content-type"].startswith(PROBLEM)
    assert refused.headers["www-authenticate"].lower().startswith("bearer")


def test_a_stored_key_of_the_default_namespace_shares_its_workflows(tenants: Tenants) -> None:
    created(tenants.create("default", workflow(id="shared")))
    _, key = tenants.new_key("default")
    response = tenants.client.get(
        "/v1/workflows/shared", headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200


def test_keys_are_stored_as_hashes_only(tenants: Tenants) -> None:
    key_id, key = tenants.new_key("acme")
    assert tenants.client.get("/v1/workflows", headers=tenants.auth("acme")).status_code == 200
    with contextlib.closing(sqlite3.connect(tenants.database)) as db:
        rows = db.execute("SELECT * FROM api_keys").fetchall()
        columns = [c[1] for c in db.execute("PRAGMA table_info(api_keys)")]
        dump = "\n".join(db.iterdump())
    assert len(rows) == 1
    row = dict(zip(columns, rows[0], strict=True))
    assert row["id"] == key_id
    assert row["namespace"] == "acme"
    assert row["key_hash"] == hashlib.sha256(key.encode()).hexdigest()
    assert key.startswith(row["prefix"]) and len(row["prefix"]) < len(key) // 3
    assert row["last_used_at"] is not None
    # Nowhere in the whole database, in any form that starts it.
    assert key not in dump
    assert key[: len(row["prefix"]) + 4] not in dump


@pytest.mark.parametrize(
    "authorization",
    ["Bearer bk_unknown", "Bearer " + "x" * 600, "Bearer caf\u00e9", "Basic abc"],
)
def test_unknown_keys_are_a_401(tenants: Tenants, authorization: str) -> None:
    response = tenants.client.get(
        "/v1/workflows", headers={"Authorization": authorization.encode("latin-1")}
    )
    assert response.status_code == 401


def test_the_key_store_being_unreachable_is_a_503_not_a_500() -> None:
    async def lookup(token: str) -> str | None:
        raise StoreError("could not check the API key: OperationalError")

    async def route(request: Request) -> PlainTextResponse:
        return PlainTextResponse(request.scope["baton.namespace"])

    app = Starlette(
        routes=[Route("/v1/x", route)],
        middleware=[Middleware(BearerAuth, keys=["env"], lookup=lookup)],
    )
    with TestClient(app) as client:
        assert client.get("/v1/x", headers={"Authorization": "Bearer env"}).text == "default"
        response = client.get("/v1/x", headers={"Authorization": "Bearer other"})
    assert response.status_code == 503
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.json()["status"] == 503
