"""Capture real Baton requests and answers for the TypeScript package's tests.

Run from the repository root, with the server installed (``make test`` or ``make run``
sets up ``.venv``)::

    .venv/bin/python clients/typescript/scripts/capture_fixtures.py

It starts a Baton server (signing with two secrets, as during a rotation) and the
end-to-end handler app on loopback ports, runs a saga that fails and compensates and a
workflow that completes, and writes ``test/fixtures/baton.json``: the secrets, every
request the handler received (headers and the raw body, exactly as sent) and a few API
answers (status documents and problem documents).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from harness import BatonFactory, HandlerApp, random_signing_secret  # noqa: E402

OUTPUT = Path(__file__).resolve().parents[1] / "test" / "fixtures" / "baton.json"
KEPT_HEADERS = (
    "content-type",
    "user-agent",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "baton-workflow-id",
    "baton-step-id",
    "baton-attempt",
    "baton-kind",
)


def answer(response: Any) -> dict[str, Any]:
    return {"status": response.status_code, "body": response.json()}


def main() -> None:
    secrets = [random_signing_secret(), random_signing_secret()]
    with tempfile.TemporaryDirectory() as tmp:
        handler_app = HandlerApp(Path(tmp) / "handler.log", secrets[0])
        handler_app.start()
        try:
            with BatonFactory(Path(tmp), ",".join(secrets)) as factory:
                server = factory.create()
                with server.client() as api, handler_app.client() as handler:
                    fixtures = capture(api, handler)
        finally:
            handler_app.stop()
    fixtures["secrets"] = secrets
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(json.dumps(fixtures, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(
        f"wrote {len(fixtures['requests'])} requests and {len(fixtures['answers'])} answers "
        f"to {OUTPUT.relative_to(ROOT)}"
    )


def capture(api: Any, handler: Any) -> dict[str, Any]:
    handler.reset()
    handler.script(ship=[{"status": 400, "json": {"error": "address unknown"}}])
    context = {"orderId": "order_123", "customer": "Zoë", "note": "📦 fragile"}
    saga = {
        "id": "fixture-saga",
        "name": "order-processing",
        "saga": True,
        "context": context,
        "onError": handler.hook_url("failed"),
        "steps": [
            {"id": "validate", "url": handler.step_url("validate")},
            {
                "id": "charge",
                "url": handler.step_url("charge"),
                "dependsOn": ["validate"],
                "compensation": handler.step_url("refund"),
            },
            {"id": "ship", "url": handler.step_url("ship"), "dependsOn": ["charge"]},
        ],
    }
    created = api.http.post("/v1/workflows", json=saga)
    api.wait_status("fixture-saga", "compensated", stop_on=("completed",))
    simple = {
        "id": "fixture-done",
        "steps": [{"id": "only", "url": handler.step_url("only")}],
        "onComplete": handler.hook_url("done"),
        "context": context,
    }
    api.http.post("/v1/workflows", json=simple)
    api.wait_status("fixture-done", "completed")
    handler.wait_for(
        lambda records: {"failed", "done"} <= {r["name"] for r in records}, kind="hooks"
    )

    requests = [
        {
            "name": record["name"],
            "path": record["path"],
            "headers": {k: record["headers"][k] for k in KEPT_HEADERS if k in record["headers"]},
            "body": record["body"],
        }
        for record in handler.requests()
    ]
    answers = {
        "created": answer(created),
        "compensated": answer(api.http.get("/v1/workflows/fixture-saga")),
        "completed": answer(api.http.get("/v1/workflows/fixture-done")),
        "notFound": answer(api.http.get("/v1/workflows/no-such-workflow")),
        "invalid": answer(api.http.post("/v1/workflows", json={"steps": [{"id": "a"}]})),
        "conflict": answer(api.http.post("/v1/workflows/fixture-done/cancel")),
        "retried": answer(api.http.post("/v1/workflows/fixture-done/steps/only/retry")),
    }
    return {"requests": requests, "answers": answers}


if __name__ == "__main__":
    main()
