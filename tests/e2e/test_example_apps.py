"""The example handler apps of ``examples/``, run as the READMEs say, against a real server.

Each app serves its own workflow (``GET /workflow.json``) with its URLs pointing at
the port it runs on — a free port here, not the 9000 of the READMEs — and
verifies Baton's signatures with the server's secret.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from harness import BatonClient, BatonFactory, BatonServer, UvicornProcess, base_environment
from test_namespaces import keys_cli


class ExampleApp(UvicornProcess):
    """``uvicorn examples.<name>.app:app`` with the signing secret it is given."""

    ready_path = "/workflow.json"

    def __init__(self, name: str, log_path: Path, signing_secret: str) -> None:
        super().__init__(log_path=log_path)
        self.name = name
        self.label = name
        self.signing_secret = signing_secret

    def command(self) -> list[str]:
        app = f"examples.{self.name}.app:app"
        return [
            sys.executable,
            "-m",
            "uvicorn",
            app,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]

    def environment(self) -> dict[str, str]:
        return {**base_environment(), "BATON_SIGNING_SECRET": self.signing_secret}

    def workflow(self, **context: str) -> dict:
        response = httpx.get(f"{self.url}/workflow.json", params=context, timeout=10)
        response.raise_for_status()
        return response.json()


@pytest.fixture
def server(baton_factory: BatonFactory) -> BatonServer:
    return baton_factory.create()


def example(name: str, tmp_path: Path, server: BatonServer) -> Iterator[ExampleApp]:
    app = ExampleApp(name, tmp_path / f"{name}.log", server.signing_secret)
    with app:
        yield app


@pytest.fixture
def orders(tmp_path: Path, server: BatonServer) -> Iterator[ExampleApp]:
    yield from example("orders", tmp_path, server)


@pytest.fixture
def render(tmp_path: Path, server: BatonServer) -> Iterator[ExampleApp]:
    yield from example("render", tmp_path, server)


def test_the_orders_example_completes_and_compensates(
    server: BatonServer, orders: ExampleApp
) -> None:
    workflow = orders.workflow()
    assert workflow["steps"][0]["url"] == f"{orders.url}/jobs/validate"
    with server.client() as api:
        done = api.wait_status(api.create(workflow)["id"], "completed")
        assert done["completedSteps"] == ["validate", "charge", "fulfill", "notify"]
        assert done["results"]["validate"] == {"total": 4200}
        failed = api.wait_status(api.create(orders.workflow(failAt="fulfill"))["id"], "compensated")
        assert failed["failedSteps"] == ["fulfill"]
        charge = next(s for s in failed["steps"] if s["id"] == "charge")
        assert charge["compensationStatus"] == "completed"
    log = orders.log_tail(200)
    assert "orders: compensation charge" in log
    assert "orders: failed workflow=" in log and "status=compensated" in log


@pytest.mark.slow
def test_the_render_example_finishes_its_async_step_through_the_callback(
    server: BatonServer, render: ExampleApp
) -> None:
    # Six pages at a second each, against a 5 s step timeout: the heartbeats carry it.
    workflow = render.workflow(pages="6")
    assert workflow["steps"][0]["timeout"] == 5
    with server.client() as api:
        done = api.wait_status(api.create(workflow)["id"], "completed", timeout=60)
        rendered = next(s for s in done["steps"] if s["id"] == "render")
        assert rendered["attempts"] == 1
        assert done["results"]["render"]["pages"] == 6
        document = done["results"]["render"]["document"]
        assert done["results"]["publish"] == {
            "url": f"https://docs.example/{document}.pdf",
            "pages": 6,
        }
        broken = api.wait_status(api.create(render.workflow(fail="yes"))["id"], "failed")
        error = next(s for s in broken["steps"] if s["id"] == "render")["error"]
        assert error["code"] == "handler_error"
        assert "template is broken" in error["message"]


def test_an_example_refuses_a_namespace_it_has_no_secret_for(
    server: BatonServer, orders: ExampleApp, tmp_path: Path
) -> None:
    # What the READMEs explain: a namespace signing with its own secret gets 401s
    # from an app that only knows the default namespace's.
    created = keys_cli(
        server.database_url,
        "create",
        "--namespace",
        "acme",
        "--generate-signing-secret",
        "--json",
        cwd=tmp_path,
    )
    key = json.loads(created.stdout)["key"]
    with BatonClient(server.url, key) as api:
        failed = api.wait_status(api.create(orders.workflow())["id"], "failed")
    validate = next(s for s in failed["steps"] if s["id"] == "validate")
    assert validate["error"]["httpStatus"] == 401
