"""The example apps of examples/: the order handlers and their workflow file."""

from __future__ import annotations

import asyncio
import importlib
import json
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from baton import AsyncClient, Fatal, Worker
from baton.signing import generate_secret
from baton.testing import signed_request

ROOT = Path(__file__).resolve().parents[2]
SECRET = generate_secret()
OTHER_SECRET = generate_secret()


@pytest.fixture
def orders(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    # The module builds its app at import, from the environment, as uvicorn needs.
    monkeypatch.setenv("BATON_SIGNING_SECRET", SECRET)
    monkeypatch.syspath_prepend(str(ROOT))
    return importlib.import_module("examples.orders.app")


@pytest.fixture
async def orders_client(orders: ModuleType) -> AsyncIterator[httpx.AsyncClient]:
    app = orders.create_app([OTHER_SECRET, SECRET])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://orders"
    ) as client:
        yield client


async def call(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> httpx.Response:
    raw, headers = signed_request(body, SECRET)
    return await client.post(path, content=raw, headers=headers)


def order_step(step_id: str, **fields: Any) -> dict[str, Any]:
    items = [{"sku": "book", "price": 1500, "qty": 2}, {"sku": "pen", "price": 1200, "qty": 1}]
    return {
        "workflowId": "order-123",
        "workflowName": "order-processing",
        "stepId": step_id,
        "attempt": 1,
        "kind": "step",
        "context": {"orderId": "order_123", "items": items},
        "previousSteps": {},
        **fields,
    }


async def test_orders_validate_through_the_module_app(
    orders: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=orders.app), base_url="http://orders"
    ) as client:
        response = await call(client, "/jobs/validate", order_step("validate"))
    assert response.json() == {"success": True, "result": {"total": 4200}}
    assert "orders: step validate workflow=order-123 attempt=1" in capsys.readouterr().out


@pytest.mark.parametrize(
    "context",
    [{"items": []}, {}, {"items": [{"sku": "x", "price": "12", "qty": 1}]}],
    ids=["empty", "absent", "bad-price"],
)
async def test_orders_validate_refuses_bad_orders_for_good(
    orders_client: httpx.AsyncClient, context: dict[str, Any]
) -> None:
    response = await call(orders_client, "/jobs/validate", order_step("validate", context=context))
    answer = response.json()
    assert (answer["success"], answer["retry"]) == (False, False)


async def test_orders_whole_flow_with_refund(orders_client: httpx.AsyncClient) -> None:
    validated = {"validate": {"status": "completed", "result": {"total": 4200}}}
    charge = await call(
        orders_client, "/jobs/charge", order_step("charge", previousSteps=validated)
    )
    charge_result = charge.json()["result"]
    assert charge_result["chargeId"].startswith("ch_")
    again = await call(orders_client, "/jobs/charge", order_step("charge", previousSteps=validated))
    assert again.json()["result"] == charge_result, "a retried charge must not charge twice"

    fulfill = await call(orders_client, "/jobs/fulfill", order_step("fulfill"))
    assert fulfill.json()["result"]["shipmentId"].startswith("shp_")
    notify = await call(orders_client, "/jobs/notify", order_step("notify"))
    assert notify.json() == {"success": True, "result": {"notified": True}}

    compensation = order_step(
        "charge", kind="compensation", compensating={"stepId": "charge", "result": charge_result}
    )
    refund = await call(orders_client, "/jobs/refund", compensation)
    assert refund.json()["result"] == {
        "refunded": charge_result["chargeId"],
        "alreadyRefunded": False,
    }
    refund_again = await call(orders_client, "/jobs/refund", compensation)
    assert refund_again.json()["result"]["alreadyRefunded"] is True


async def test_orders_fail_at(orders_client: httpx.AsyncClient) -> None:
    body = order_step("fulfill")
    body["context"]["failAt"] = "fulfill"
    answer = (await call(orders_client, "/jobs/fulfill", body)).json()
    assert (answer["success"], answer["retry"]) == (False, False)


@pytest.mark.parametrize("hook", ["done", "failed"])
async def test_orders_hooks_log_what_they_receive(
    orders_client: httpx.AsyncClient, hook: str, capsys: pytest.CaptureFixture[str]
) -> None:
    body = {"workflowId": "order-123", "status": "completed", "completedSteps": ["validate"]}
    response = await call(orders_client, f"/hooks/{hook}", body)
    assert response.json() == {"received": True}
    assert f"orders: {hook} workflow=order-123 status=completed" in capsys.readouterr().out
    raw, headers = signed_request(body, generate_secret())
    refused = await orders_client.post(f"/hooks/{hook}", content=raw, headers=headers)
    assert refused.status_code == 401


@pytest.mark.parametrize(
    ("environ", "file_text", "expected"),
    [
        ({"BATON_SIGNING_SECRET": f"{SECRET}"}, None, [SECRET]),
        ({"BATON_SIGNING_SECRET": f"{SECRET}, {OTHER_SECRET}"}, None, [SECRET, OTHER_SECRET]),
        ({"BATON_SIGNING_SECRETS": f"{OTHER_SECRET}"}, None, [OTHER_SECRET]),
        ({}, f"{SECRET}\n", [SECRET]),
        ({}, f"{SECRET},{OTHER_SECRET}\nignored\n", [SECRET, OTHER_SECRET]),
    ],
    ids=["env", "env-comma", "server-env", "file", "file-comma"],
)
def test_orders_load_secrets(
    orders: ModuleType,
    tmp_path: Path,
    environ: dict[str, str],
    file_text: str | None,
    expected: list[str],
) -> None:
    if file_text is not None:
        (tmp_path / "signing-secret").write_text(file_text)
    assert orders.load_secrets({**environ, "BATON_DATA_DIR": str(tmp_path)}) == expected


@pytest.mark.parametrize("file_text", [None, "", "\n"], ids=["no-file", "empty", "blank"])
def test_orders_load_secrets_explains_what_is_missing(
    orders: ModuleType, tmp_path: Path, file_text: str | None
) -> None:
    if file_text is not None:
        (tmp_path / "signing-secret").write_text(file_text)
    with pytest.raises(RuntimeError, match="signing secret"):
        orders.load_secrets({"BATON_DATA_DIR": str(tmp_path)})


async def test_orders_workflow_json_points_at_the_app_where_it_runs(
    orders_client: httpx.AsyncClient, orders: ModuleType
) -> None:
    template = json.loads((ROOT / "examples/orders/workflow.json").read_text())
    assert "9000" not in json.dumps(template)
    response = await orders_client.get("/workflow.json", params={"failAt": "fulfill"})
    workflow = response.json()
    paths = {route.path for route in orders.app.routes}
    urls = [step["url"] for step in workflow["steps"]]
    urls += [step["compensation"] for step in workflow["steps"] if "compensation" in step]
    urls += [workflow["onComplete"], workflow["onError"]]
    assert len(urls) == 7
    for url in urls:
        assert url.startswith("http://orders/")
        assert url.removeprefix("http://orders") in paths
    assert workflow["context"]["failAt"] == "fulfill"
    assert workflow["context"]["items"] == template["context"]["items"]


# --- the async render app ------------------------------------------------------------------


@pytest.fixture
def render(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.setenv("BATON_SIGNING_SECRET", SECRET)
    monkeypatch.syspath_prepend(str(ROOT))
    return importlib.import_module("examples.render.app")


async def test_the_render_example_answers_202_and_calls_back(
    render: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(render, "SECONDS_PER_PAGE", 0.0)
    calls: list[tuple[str, Any]] = []

    def baton(request: httpx.Request) -> httpx.Response:
        calls.append((request.url.path, json.loads(request.content or b"null")))
        return httpx.Response(200, json={"accepted": True})

    monkeypatch.setattr(
        render, "callback_client", lambda: httpx.AsyncClient(transport=httpx.MockTransport(baton))
    )
    body = {
        "workflowId": "doc-1",
        "stepId": "render",
        "attempt": 1,
        "kind": "step",
        "context": {"pages": 2},
        "previousSteps": {},
        "callbackUrl": "http://baton.test/v1/callbacks/tok",
    }
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=render.app), base_url="http://render"
    ) as client:
        response = await call(client, "/jobs/render", body)
    assert response.status_code == 202
    assert response.json() == {"async": True}
    await asyncio.gather(*render.background)
    assert [path for path, _ in calls] == [
        "/v1/callbacks/tok/heartbeat",
        "/v1/callbacks/tok/heartbeat",
        "/v1/callbacks/tok",
    ]
    final = calls[-1][1]
    assert final["success"] is True and final["result"]["pages"] == 2
    assert final["result"]["document"].startswith("doc_")


# --- the FastAPI document app -----------------------------------------------------------


@pytest.fixture
def documents(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.setenv("BATON_SIGNING_SECRET", SECRET)
    monkeypatch.syspath_prepend(str(ROOT))
    return importlib.import_module("examples.documents.app")


def doc_step(step_id: str, **fields: Any) -> dict[str, Any]:
    fields.setdefault("context", {"text": "One. Two three. Four.", "sentences": 2})
    return order_step(step_id, **fields)


async def test_documents_whole_flow(documents: ModuleType) -> None:
    callbacks: list[httpx.Request] = []

    def baton(request: httpx.Request) -> httpx.Response:
        callbacks.append(request)
        return httpx.Response(
            200, json={"accepted": True, "stepId": "summarize", "status": "completed"}
        )

    client = AsyncClient(api_key="", transport=httpx.MockTransport(baton))
    app = documents.create_app([SECRET], client)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://documents"
    ) as http:
        extract = (await call(http, "/jobs/extract", doc_step("extract"))).json()
        assert extract == {"success": True, "result": {"words": 4, "text": "One. Two three. Four."}}

        previous = {"extract": {"status": "completed", "result": extract["result"]}}
        body = doc_step(
            "summarize", previousSteps=previous, callbackUrl="http://baton.test/v1/callbacks/tok"
        )
        answer = await call(http, "/jobs/summarize", body)
        assert (answer.status_code, answer.json()) == (202, {"async": True})
    [callback] = callbacks
    assert str(callback.url) == "http://baton.test/v1/callbacks/tok"
    assert "authorization" not in callback.headers
    assert json.loads(callback.content) == {
        "success": True,
        "result": {"summary": "One. Two three."},
    }

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://documents"
    ) as http:
        summarized = {"summarize": {"status": "completed", "result": {"summary": "One."}}}
        index = await call(http, "/jobs/index", doc_step("index", previousSteps=summarized))
        assert index.json()["result"] == {"indexed": "order-123", "chars": 4}
        refused = await call(http, "/jobs/extract", doc_step("extract", context={}))
        assert refused.json() == {
            "success": False,
            "error": "context.text must be a non-empty string",
            "retry": False,
        }
        done = await call(http, "/hooks/done", {"workflowId": "w", "status": "completed"})
        assert done.json() == {"received": True}
        raw, headers = signed_request({"workflowId": "w"}, generate_secret())
        assert (await http.post("/hooks/done", content=raw, headers=headers)).status_code == 401


def test_documents_workflow_json_points_at_the_app(documents: ModuleType) -> None:
    workflow = json.loads((ROOT / "examples/documents/workflow.json").read_text())
    paths = {route.path for route in documents.app.routes}
    for url in [step["url"] for step in workflow["steps"]] + [workflow["onComplete"]]:
        assert url.removeprefix("http://127.0.0.1:9001") in paths


# --- the queue worker -------------------------------------------------------------------


def test_worker_example_handler() -> None:
    from examples.worker import make_thumbnail

    class Job:
        def __init__(self, payload: dict[str, Any]) -> None:
            self.payload = payload

    result = make_thumbnail(Job({"image": "cat.png", "width": 64}))
    assert result["width"] == 64 and result["thumbnail"].endswith("-64.png")
    for payload in ({}, {"image": "cat.png", "width": 10_000}, {"image": "x", "width": "9"}):
        with pytest.raises(Fatal):
            make_thumbnail(Job(payload))


def test_worker_example_runs_against_a_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    """The example's worker against the client's test double of the §7 queue."""
    monkeypatch.syspath_prepend(str(ROOT / "clients/python/tests"))
    fake_queue_server = importlib.import_module("fake_queue_server")
    from examples import worker as example

    with fake_queue_server.FakeQueueServer() as fake:
        good = fake.state.add(example.QUEUE, {"image": "cat.png", "width": 120})
        bad = fake.state.add(example.QUEUE, {"width": 120})
        monkeypatch.setenv("BATON_URL", fake.url)
        monkeypatch.setenv("BATON_API_KEY", fake_queue_server.API_KEY)
        workers: list[Worker] = []
        real_worker = example.Worker

        def remember(*args: Any, **kwargs: Any) -> Worker:
            # A short long poll, so that stopping does not wait for the default one.
            workers.append(real_worker(*args, **{**kwargs, "wait": 0.2}))
            return workers[-1]

        monkeypatch.setattr(example, "Worker", remember)
        running = threading.Thread(target=example.main)
        running.start()
        deadline = time.monotonic() + 20
        while not (good.status == "completed" and bad.status == "dlq"):
            assert time.monotonic() < deadline, (good.status, bad.status)
            time.sleep(0.05)
        workers[0].stop()
        running.join(20)
    assert good.status == "completed" and good.result["width"] == 120
    assert bad.status == "dlq" and "payload.image" in bad.last_error
