"""The OpenAPI document, the /docs page, and real answers held to the documented models.

The fuzz test (tests/integration/test_api_fuzz.py) throws generated requests at
every operation; the tests here drive workflows into the states a fuzzer cannot
reach on purpose (failed, compensated, cancelled, waiting for a callback) and check
that every answer on the way is exactly what the models behind the document say.
"""

from __future__ import annotations

import re
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator
from pydantic import BaseModel
from starlette.datastructures import Secret
from starlette.exceptions import StarletteDeprecationWarning
from starlette.routing import Route

from app.api import Api
from app.documents import (
    CallbackAnswer,
    Dependencies,
    EventDocument,
    EventList,
    Health,
    HeartbeatAnswer,
    Problem,
    Readiness,
    StepDetail,
    WorkflowDocument,
    WorkflowPage,
)
from app.main import create_app
from app.openapi import CREATE_EXAMPLE, OPERATIONS, build_document
from app.schemas import CallbackRequest, CancelRequest, RetryPolicy, StepSpec, WorkflowCreate
from app.settings import Settings
from baton.signing import generate_secret

with warnings.catch_warnings():
    # As in test_api.py: Starlette 1.x prefers the httpx2 fork for its test client.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

KEY = "k1"
AUTH = {"Authorization": f"Bearer {KEY}"}
PUBLIC_URL = "http://baton.test"
FINISHED = {"completed", "failed", "cancelled", "compensated", "compensation_failed"}


def routes() -> list[Route]:
    api = Api(None, policy=None, wake=lambda: None)  # type: ignore[arg-type]
    return [r for r in api.routes() if isinstance(r, Route)]


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return build_document(routes())


# ----------------------------------------------------------------------- document


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1.")
    OpenAPIV31SpecValidator(document).validate()


def test_every_route_is_in_the_document(document: dict[str, Any]) -> None:
    documented = {
        (path, method.upper())
        for path, operations in document["paths"].items()
        for method in operations
    }
    camel = {
        "workflow_id": "workflowId",
        "step_id": "stepId",
        "token": "token",
        "schedule_id": "scheduleId",
    }
    for route in routes():
        if not route.include_in_schema:
            continue
        path = re.sub(r"{(\w+)}", lambda m: "{" + camel[m.group(1)] + "}", route.path)
        for method in route.methods or ():
            if method != "HEAD":
                assert (path, method) in documented, f"{method} {route.path} is not documented"


def test_a_route_without_a_description_is_refused() -> None:
    async def endpoint(request: Any) -> None:
        raise NotImplementedError

    with pytest.raises(LookupError, match="/v1/new"):
        build_document([*routes(), Route("/v1/new", endpoint, methods=["GET"])])


def test_every_description_belongs_to_a_route() -> None:
    assert set(OPERATIONS) == {r.name for r in routes() if r.include_in_schema}


def test_operation_ids_are_unique(document: dict[str, Any]) -> None:
    ids = [op["operationId"] for ops in document["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))


def test_v1_needs_the_key_except_callbacks(document: dict[str, Any]) -> None:
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": document["components"]["securitySchemes"]["bearerAuth"]["description"],
    }
    for path, operations in document["paths"].items():
        for method, op in operations.items():
            keyed = path.startswith("/v1/") and not path.startswith("/v1/callbacks/")
            assert op["security"] == ([{"bearerAuth": []}] if keyed else []), (method, path)
            assert ("401" in op["responses"]) == keyed, (method, path)


def test_every_error_is_a_problem_document(document: dict[str, Any]) -> None:
    problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for path, operations in document["paths"].items():
        for method, op in operations.items():
            for status, answer in op["responses"].items():
                if int(status) >= 400 and status != "503":
                    assert answer["content"] == problem, (method, path, status)


def test_path_parameters_carry_the_id_pattern(document: dict[str, Any]) -> None:
    step = document["paths"]["/v1/workflows/{workflowId}/steps/{stepId}"]["get"]
    patterns = {p["name"]: p["schema"].get("pattern") for p in step["parameters"]}
    assert patterns == {
        "workflowId": "^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$",
        "stepId": "^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$",
    }


def test_list_and_header_parameters(document: dict[str, Any]) -> None:
    listing = document["paths"]["/v1/workflows"]["get"]["parameters"]
    assert [p["name"] for p in listing] == ["status", "name", "limit", "cursor"]
    assert listing[0]["schema"]["enum"] == [
        "pending",
        "running",
        "completed",
        "failed",
        "cancelled",
        "compensating",
        "compensated",
        "compensation_failed",
    ]
    assert listing[2]["schema"] == {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}
    create = document["paths"]["/v1/workflows"]["post"]["parameters"]
    assert [(p["name"], p["in"]) for p in create] == [("Idempotency-Key", "header")]
    events = document["paths"]["/v1/workflows/{workflowId}/events"]["get"]
    assert ("Last-Event-ID", "header") in [(p["name"], p["in"]) for p in events["parameters"]]
    assert set(events["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}


@pytest.mark.parametrize(
    ("path", "method", "model"),
    [
        ("/v1/workflows", "post", WorkflowCreate),
        ("/v1/workflows/{workflowId}/cancel", "post", CancelRequest),
        ("/v1/callbacks/{token}", "post", CallbackRequest),
    ],
)
def test_request_bodies_are_the_validating_models(
    document: dict[str, Any], path: str, method: str, model: type[BaseModel]
) -> None:
    body = document["paths"][path][method]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": f"#/components/schemas/{model.__name__}"}
    schemas = document["components"]["schemas"]
    for nested in (model, StepSpec, RetryPolicy) if model is WorkflowCreate else (model,):
        aliases = {f.alias for f in nested.model_fields.values()}
        assert set(schemas[nested.__name__]["properties"]) == aliases


def test_the_create_example_is_a_valid_request(client: TestClient) -> None:
    assert client.post("/v1/workflows", json=CREATE_EXAMPLE, headers=AUTH).status_code == 201


def test_the_document_is_served_without_a_key(client: TestClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == orjson.loads(orjson.dumps(build_document(routes())))


# --------------------------------------------------------------------------- /docs


def test_the_docs_page_is_served_without_a_key(client: TestClient) -> None:
    response = client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert 'url: "openapi.json"' in response.text


def test_the_docs_page_names_no_other_host(client: TestClient) -> None:
    page = client.get("/docs").text
    assert "//" not in page
    assert "validatorUrl: null" in page
    # Relative to /docs, so that they resolve under a proxy's path prefix too.
    references = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert references and all(ref.startswith("docs/assets/") for ref in references)


@pytest.mark.parametrize(
    ("asset", "content_type"),
    [
        ("swagger-ui.css", "text/css"),
        ("swagger-ui-bundle.js", "javascript"),
        ("favicon-32x32.png", "image/png"),
    ],
)
def test_the_docs_assets_are_served(client: TestClient, asset: str, content_type: str) -> None:
    page = client.get("/docs").text
    assert f"docs/assets/{asset}" in page
    response = client.get(f"/docs/assets/{asset}")
    assert response.status_code == 200
    assert content_type in response.headers["content-type"]
    assert len(response.content) > 100


def test_a_missing_asset_is_a_404_problem(client: TestClient) -> None:
    response = client.get("/docs/assets/nope.js")
    assert response.status_code == 404
    Problem.model_validate_json(response.content)


# ------------------------------------------------------------ answers match models


class Handler:
    """What the fake handler answers, by the last segment of the step URL."""

    def __init__(self) -> None:
        self.callbacks: dict[str, str] = {}
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = orjson.loads(request.content)
        behaviour = request.url.path.rsplit("/", 1)[-1]
        if behaviour == "wait":
            with self.lock:
                self.callbacks[body["workflowId"]] = body["callbackUrl"]
            return httpx.Response(202, json={"async": True})
        if behaviour == "break":
            return httpx.Response(503, text="unavailable")
        if behaviour == "refuse":
            return httpx.Response(200, json={"success": False, "error": "no", "retry": False})
        return httpx.Response(200, json={"success": True, "result": {"step": behaviour}})

    def callback_path(self, workflow_id: str) -> str:
        wait_until(lambda: workflow_id in self.callbacks)
        with self.lock:
            return self.callbacks[workflow_id].removeprefix(PUBLIC_URL)


@pytest.fixture
def handler() -> Handler:
    return Handler()


@pytest.fixture
def client(tmp_path: Path, handler: Handler) -> Iterator[TestClient]:
    app = create_app(
        Settings(
            database_url=f"sqlite://{tmp_path}/db.sqlite3",
            data_dir=tmp_path,
            api_keys=(Secret(KEY),),
            signing_secrets=(Secret(generate_secret()),),
            public_url=PUBLIC_URL,
        ),
        transport=httpx.MockTransport(handler),
    )
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def wait_until(condition: Callable[[], bool], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def answer(response: httpx.Response, model: type[BaseModel], status: int = 200) -> Any:
    """Assert the status, the documented media type and the model; return the JSON."""
    assert response.status_code == status, response.text
    media = "application/problem+json" if model is Problem else "application/json"
    assert response.headers["content-type"].split(";")[0] == media
    model.model_validate_json(response.content)
    return response.json()


def step(step_id: str, behaviour: str, **fields: Any) -> dict[str, Any]:
    return {"id": step_id, "url": f"https://handler.example/{behaviour}", **fields}


def settled(client: TestClient, workflow_id: str) -> dict[str, Any]:
    def done() -> bool:
        status = client.get(f"/v1/workflows/{workflow_id}", headers=AUTH).json()["status"]
        return bool(status in FINISHED)

    wait_until(done)
    document: dict[str, Any] = answer(
        client.get(f"/v1/workflows/{workflow_id}", headers=AUTH), WorkflowDocument
    )
    return document


def read_everything(client: TestClient, workflow_id: str) -> None:
    """Every read of a workflow and of each of its steps answers its model."""
    document = answer(client.get(f"/v1/workflows/{workflow_id}", headers=AUTH), WorkflowDocument)
    for item in document["steps"]:
        base = f"/v1/workflows/{workflow_id}/steps/{item['id']}"
        answer(client.get(base, headers=AUTH), StepDetail)
        answer(client.get(f"{base}/dependencies", headers=AUTH), Dependencies)
    answer(client.get(f"/v1/workflows/{workflow_id}/events", headers=AUTH), EventList)
    answer(client.get("/v1/workflows", headers=AUTH), WorkflowPage)


def test_a_completed_workflow(client: TestClient) -> None:
    body = {
        "steps": [
            step("a", "ok"),
            step("b", "ok", dependsOn=["a"], when="steps.a.result.step == 'ok'"),
            step("c", "ok", dependsOn=["a"], when="false"),
        ],
        "onComplete": "https://handler.example/done",
    }
    created = answer(client.post("/v1/workflows", json=body, headers=AUTH), WorkflowDocument, 201)
    document = settled(client, created["id"])
    assert document["status"] == "completed"
    read_everything(client, created["id"])


def test_a_failed_and_compensated_workflow(client: TestClient) -> None:
    body = {
        "saga": True,
        "steps": [
            step("a", "ok", compensation="https://handler.example/undo"),
            step("b", "break", dependsOn=["a"], retries={"maxAttempts": 2, "delay": 0}),
            step("c", "ok", dependsOn=["b"]),
            step("d", "refuse", continueOnFailure=True),
        ],
    }
    created = answer(client.post("/v1/workflows", json=body, headers=AUTH), WorkflowDocument, 201)
    document = settled(client, created["id"])
    assert document["status"] == "compensated"
    assert document["error"]["code"] == "step_failed"
    read_everything(client, created["id"])
    answer(client.post(f"/v1/workflows/{created['id']}/retry", headers=AUTH), Problem, 409)


def test_a_failed_workflow_retried(client: TestClient) -> None:
    created = client.post(
        "/v1/workflows",
        json={"steps": [step("a", "refuse"), step("b", "ok", dependsOn=["a"])]},
        headers=AUTH,
    ).json()
    assert settled(client, created["id"])["status"] == "failed"
    read_everything(client, created["id"])
    answer(client.post(f"/v1/workflows/{created['id']}/retry", headers=AUTH), WorkflowDocument)
    assert settled(client, created["id"])["status"] == "failed"
    answer(
        client.post(f"/v1/workflows/{created['id']}/steps/a/retry", headers=AUTH),
        WorkflowDocument,
    )


def test_an_async_step_its_heartbeat_and_callback(client: TestClient, handler: Handler) -> None:
    created = client.post("/v1/workflows", json={"steps": [step("a", "wait")]}, headers=AUTH)
    workflow_id = created.json()["id"]
    callback = handler.callback_path(workflow_id)

    def beat() -> httpx.Response:
        return client.post(f"{callback}/heartbeat")

    # 409 until the 202 has been recorded, then the new deadline.
    wait_until(lambda: beat().status_code == 200)
    answer(beat(), HeartbeatAnswer)
    read_everything(client, workflow_id)
    done = client.post(callback, json={"success": True, "result": {"pages": 12}})
    assert answer(done, CallbackAnswer)["status"] == "completed"
    answer(client.post(callback, json={"success": True}), Problem, 410)
    answer(beat(), Problem, 410)
    assert settled(client, workflow_id)["status"] == "completed"
    read_everything(client, workflow_id)


def test_a_cancelled_workflow(client: TestClient) -> None:
    created = client.post("/v1/workflows", json={"steps": [step("a", "wait")]}, headers=AUTH)
    workflow_id = created.json()["id"]
    cancelled = client.post(f"/v1/workflows/{workflow_id}/cancel", headers=AUTH)
    assert answer(cancelled, WorkflowDocument)["status"] == "cancelled"
    answer(client.post(f"/v1/workflows/{workflow_id}/cancel", headers=AUTH), Problem, 409)
    read_everything(client, workflow_id)


def test_the_event_stream_carries_event_documents(client: TestClient) -> None:
    created = client.post("/v1/workflows", json={"steps": [step("a", "ok")]}, headers=AUTH)
    workflow_id = created.json()["id"]
    settled(client, workflow_id)
    stream = client.get(
        f"/v1/workflows/{workflow_id}/events",
        headers={**AUTH, "Accept": "text/event-stream"},
    )
    assert stream.headers["content-type"].split(";")[0] == "text/event-stream"
    data = [line[6:] for line in stream.text.splitlines() if line.startswith("data: ")]
    assert data
    for line in data:
        EventDocument.model_validate_json(line)


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("GET", "/v1/workflows", {}, 401),
        ("GET", "/v1/workflows/nope", AUTH, 404),
        ("GET", "/v1/workflows?limit=0", AUTH, 422),
        ("POST", "/v1/workflows", AUTH, 400),
        ("DELETE", "/v1/workflows", AUTH, 405),
        ("POST", "/v1/callbacks/forged", {}, 403),
        ("GET", "/nowhere", {}, 404),
    ],
)
def test_errors_answer_the_problem_model(
    client: TestClient, method: str, path: str, headers: dict[str, str], status: int
) -> None:
    answer(client.request(method, path, headers=headers), Problem, status)


def test_health_answers_its_models(client: TestClient) -> None:
    answer(client.get("/healthz"), Health)
    answer(client.get("/readyz"), Readiness)
