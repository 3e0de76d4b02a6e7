"""The API against its own OpenAPI document: schemathesis calls every operation.

The app runs in-process (schemathesis' ASGI transport runs its lifespan) on a fresh
database per operation, SQLite and PostgreSQL, seeded with the workflow the document's examples
name, so reads and actions meet a real workflow as well as unknown ids. Deliveries
go to an ``httpx.MockTransport`` that answers every request itself: whatever URLs
the generated workflows hold, nothing leaves the process.

Every answer must be documented (status code, content type, schema) and none may
be a 5xx.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import get_client, shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.applications import Starlette
from starlette.datastructures import Secret

from app.main import create_app
from app.openapi import CREATE_EXAMPLE
from app.settings import Settings
from baton.signing import generate_secret

KEY = "fuzz-key"
Handler = Callable[[httpx.Request], httpx.Response]
AUTH = {"Authorization": f"Bearer {KEY}"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def completes(request: httpx.Request) -> httpx.Response:
    """Every step completes at once."""
    return httpx.Response(200, json={"success": True, "result": {"ok": True}})


def waits(request: httpx.Request) -> httpx.Response:
    """Every step is async and waits for a callback that never comes (within a test)."""
    return httpx.Response(202, json={"async": True})


def make_app(data_dir: Path, handler: Handler = completes, database_url: str = "") -> Starlette:
    return create_app(
        Settings(
            database_url=database_url or f"sqlite://{data_dir}/db.sqlite3",
            data_dir=data_dir,
            api_keys=(Secret(KEY),),
            signing_secrets=(Secret(generate_secret()),),
        ),
        transport=httpx.MockTransport(handler),
    )


def served_document() -> dict[str, Any]:
    """What ``GET /openapi.json`` answers (the route needs no database, so no lifespan)."""
    response = get_client(make_app(Path("unused"))).get("/openapi.json")
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


schema = schemathesis.openapi.from_dict(served_document())


def seeded_app(data_dir: Path, handler: Handler = completes, database_url: str = "") -> Starlette:
    """A fresh app holding the documented example workflow, its lifespan running."""
    data_dir.mkdir(parents=True, exist_ok=True)
    application = make_app(data_dir, handler, database_url)
    # The client starts the lifespan; schemathesis stops it when the test ends.
    with get_client(application) as client:
        answer = client.post("/v1/workflows", json=CREATE_EXAMPLE, headers=AUTH)
        assert answer.status_code == 201, answer.text
    return application


@pytest.fixture
def app(tmp_path: Path, app_database_url: str) -> Starlette:
    return seeded_app(tmp_path, completes, app_database_url)


@pytest.mark.slow
@schema.parametrize()
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)
def test_every_answer_is_documented_and_never_a_server_error(
    case: schemathesis.Case, app: Starlette
) -> None:
    case.call_and_validate(app=app, headers=AUTH, checks=CHECKS)


class Scenarios(schema.as_state_machine()):  # type: ignore[misc]
    """Sequences that follow the document's links: create, then read and act on it.

    Each scenario gets a fresh app, so that replaying one gives the same answers.
    """

    data_dir: Path
    runs = 0

    def setup(self) -> None:
        Scenarios.runs += 1
        # Steps that wait keep each answer independent of the dispatcher's timing.
        self.app = seeded_app(self.data_dir / f"run-{Scenarios.runs}", waits)

    def teardown(self) -> None:
        shutdown_lifespans()

    def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
        return {"app": self.app, "headers": AUTH}

    def validate_response(
        self, response: schemathesis.Response, case: schemathesis.Case, **kwargs: Any
    ) -> None:
        case.validate_response(response, checks=CHECKS)


@pytest.mark.slow
def test_linked_sequences_are_documented_and_never_a_server_error(tmp_path: Path) -> None:
    Scenarios.data_dir = tmp_path
    Scenarios.run(
        settings=settings(
            max_examples=30,
            stateful_step_count=6,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
    )
