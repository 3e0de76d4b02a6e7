"""Requests of a namespace's workflows, through the real dispatcher and store (respx handlers).

A namespace with signing secrets of its own signs every request of its workflows
(steps, compensations, onComplete / onError) with them; other namespaces, and the
default one, sign with the global secrets. Signatures are checked with the
``standardwebhooks`` library, as a handler would. Every request names the public id.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
import respx
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.datastructures import Secret

from app.db import close_database, open_database
from app.delivery import Deliverer
from app.dispatcher import Dispatcher
from app.netguard import NetPolicy
from app.schemas import canonical_json, parse_create_request
from app.store import OutboundRequest, Store
from app.tenants import NamespaceSigners
from baton.signing import Signer, generate_secret

GLOBAL = generate_secret()
ACME = generate_secret()
ACME_NEXT = generate_secret()


class Harness:
    def __init__(self, store: Store, router: respx.MockRouter, dispatcher: Dispatcher) -> None:
        self.store = store
        self.router = router
        self.dispatcher = dispatcher

    async def create(self, body: dict[str, Any], namespace: str) -> str:
        model, document = parse_create_request(
            orjson.dumps(body), check_url=lambda u: None, check_condition=lambda s: None
        )
        digest = hashlib.sha256(canonical_json(document)).hexdigest()
        await self.store.create_workflow(model, request_hash=digest, namespace=namespace)
        self.dispatcher.wake()
        return f"{namespace}/{body['id']}" if namespace != "default" else str(body["id"])

    async def wait(self, scoped: str, within: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + within
        document: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            document = await self.store.get_workflow(scoped)
            assert document is not None
            if document["status"] not in ("pending", "running", "compensating") and not (
                await self.store.has_pending_deliveries(scoped)
            ):
                return document
            await asyncio.sleep(0.02)
        raise AssertionError(f"workflow {scoped} did not finish: {document}")

    def requests(self, host: str) -> list[httpx.Request]:
        return [c.request for c in self.router.calls if c.request.url.host == host]


@pytest.fixture
async def harness(database_url: str) -> AsyncIterator[Harness]:
    await open_database(database_url)
    router = respx.MockRouter(assert_all_called=False, assert_all_mocked=True)
    store = Store()
    await store.set_namespace_secrets("acme", [Secret(ACME), Secret(ACME_NEXT)], replace=True)
    signers = NamespaceSigners(Signer(GLOBAL), store.namespace_signing_secrets)

    def callback_url(req: OutboundRequest) -> str:
        return f"http://baton.test/v1/callbacks/{req.step_id}"

    deliverer = Deliverer(
        signer=Signer(GLOBAL),
        signers=signers,
        policy=NetPolicy(allow_private=False),
        callback_url=callback_url,
        max_connections=16,
        transport=httpx.MockTransport(router.async_handler),
    )
    dispatcher = Dispatcher(store, deliverer, max_concurrency=16, lease_seconds=30)
    dispatcher.start()
    try:
        yield Harness(store, router, dispatcher)
    finally:
        await dispatcher.stop(grace=1)
        await deliverer.aclose()
        await close_database()


def saga(workflow_id: str, host: str) -> dict[str, Any]:
    """a completes, b fails for good: a is compensated, then onError is called."""
    return {
        "id": workflow_id,
        "saga": True,
        "steps": [
            {"id": "a", "url": f"https://{host}/a", "compensation": f"https://{host}/undo-a"},
            {
                "id": "b",
                "url": f"https://{host}/b",
                "dependsOn": ["a"],
                "retries": {"maxAttempts": 1},
            },
        ],
        "onError": f"https://{host}/failed",
    }


def verifies(secret: str, request: httpx.Request) -> bool:
    try:
        Webhook(secret).verify(request.content, dict(request.headers))
    except WebhookVerificationError:
        return False
    return True


async def test_each_namespace_signs_with_its_own_secrets(harness: Harness) -> None:
    for host in ("acme.example", "beta.example", "default.example"):
        harness.router.post(f"https://{host}/a").mock(
            return_value=httpx.Response(200, json={"success": True, "result": 1})
        )
        harness.router.post(f"https://{host}/b").mock(return_value=httpx.Response(400))
        harness.router.post(f"https://{host}/undo-a").mock(return_value=httpx.Response(200))
        harness.router.post(f"https://{host}/failed").mock(return_value=httpx.Response(200))
    scoped = {
        "acme": await harness.create(saga("order-1", "acme.example"), "acme"),
        "beta": await harness.create(saga("order-1", "beta.example"), "beta"),
        "default": await harness.create(saga("order-1", "default.example"), "default"),
    }
    for namespace, workflow_id in scoped.items():
        document = await harness.wait(workflow_id)
        assert document["status"] == "compensated", (namespace, document)

    acme = harness.requests("acme.example")
    assert sorted(r.headers["baton-kind"] for r in acme) == [
        "compensation",
        "on_error",
        "step",
        "step",
    ]
    for request in acme:
        # Both of acme's secrets sign (rotation); the global one does not.
        assert verifies(ACME, request) and verifies(ACME_NEXT, request)
        assert not verifies(GLOBAL, request)
        assert len(request.headers["webhook-signature"].split(" ")) == 2
    for host in ("beta.example", "default.example"):
        requests = harness.requests(host)
        assert len(requests) == 4
        for request in requests:
            assert verifies(GLOBAL, request) and not verifies(ACME, request)

    for request in acme + harness.requests("beta.example"):
        assert request.headers["baton-workflow-id"] == "order-1"
        assert orjson.loads(request.content)["workflowId"] == "order-1"
