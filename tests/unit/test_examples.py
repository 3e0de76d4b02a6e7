"""The example apps of examples/: the order handlers and their workflow file."""

from __future__ import annotations

import importlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

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


def test_orders_workflow_json_points_at_the_app(orders: ModuleType) -> None:
    workflow = json.loads((ROOT / "examples/orders/workflow.json").read_text())
    paths = {route.path for route in orders.app.routes}
    urls = [step["url"] for step in workflow["steps"]]
    urls += [step["compensation"] for step in workflow["steps"] if "compensation" in step]
    urls += [workflow["onComplete"], workflow["onError"]]
    for url in urls:
        assert url.startswith("http://127.0.0.1:9000/")
        assert url.removeprefix("http://127.0.0.1:9000") in paths
