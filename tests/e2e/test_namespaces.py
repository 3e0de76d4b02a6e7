"""Namespaces over real processes: keys made with the CLI, isolation, per-namespace signing.

The server signs with a global secret the handler app does not know; the ``acme``
namespace is given the handler's secret with ``python -m app keys create``, so
only acme's requests verify at the handler (checked again here with the
``standardwebhooks`` library). Its async step completes through its callback
token, and the key is revoked with the CLI while the server runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from harness import (
    PROJECT_ROOT,
    BatonClient,
    BatonFactory,
    HandlerClient,
    random_signing_secret,
)
from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def keys_cli(database_url: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
    env.update({"BATON_DATABASE_URL": database_url, "PYTHONPATH": str(PROJECT_ROOT)})
    result = subprocess.run(
        [sys.executable, "-m", "app", "keys", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result


def verifies(secret: str, record: dict[str, Any]) -> bool:
    try:
        Webhook(secret).verify(record["body"], record["headers"])
    except WebhookVerificationError:
        return False
    return True


def test_a_namespace_with_its_own_secret_is_signed_with_it_and_isolated(
    baton_factory: BatonFactory, handler: HandlerClient, signing_secret: str, tmp_path: Path
) -> None:
    global_secret = random_signing_secret()
    server = baton_factory.create(signing_secret=global_secret)
    created = keys_cli(
        server.database_url,
        "create",
        "--namespace",
        "acme",
        "--signing-secret",
        signing_secret,
        "--json",
        cwd=tmp_path,
    )
    key = json.loads(created.stdout)
    handler.script(
        job=[
            {
                "status": 202,
                "json": {"async": True},
                "then": [{"json": {"success": True, "result": 7}}],
            }
        ]
    )

    def order(prefix: str) -> dict[str, Any]:
        return {
            "id": "order-1",
            "steps": [
                {"id": "sync", "url": handler.step_url(f"{prefix}sync")},
                {"id": "job", "url": handler.step_url(f"{prefix}job"), "dependsOn": ["sync"]},
            ],
            "onComplete": handler.hook_url(f"{prefix}done"),
        }

    with BatonClient(server.url, key["key"]) as acme, server.client() as default:
        acme.create(order(""))
        # The same id in the default namespace is another workflow, not a conflict.
        handler.script(d_job=[{"status": 200}])
        default.create(order("d_"))
        done = acme.wait_status("order-1", "completed")
        assert done["results"]["job"] == 7  # through the callback token
        default.wait_status("order-1", "completed")
        handler.wait_count(1, "done")
        handler.wait_count(1, "d_done")

        acme_requests = [handler.requests(name)[0] for name in ("sync", "job", "done")]
        for record in acme_requests:
            assert record["verified"], record["verify_error"]
            assert verifies(signing_secret, record) and not verifies(global_secret, record)
            assert record["headers"]["baton-workflow-id"] == "order-1"
            assert record["json"]["workflowId"] == "order-1"
        token = acme_requests[1]["json"]["callbackUrl"].rsplit("/", 1)[1]
        assert "acme/" not in token
        for name in ("d_sync", "d_job", "d_done"):
            [record] = handler.requests(name)
            assert not record["verified"]
            assert verifies(global_secret, record) and not verifies(signing_secret, record)

        # Each sees only its own: a list of one, and the other's steps are not there.
        assert [i["id"] for i in acme.list_workflows()["items"]] == ["order-1"]
        assert acme.get("order-1")["steps"][0]["url"] == handler.step_url("sync")
        assert default.get("order-1")["steps"][0]["url"] == handler.step_url("d_sync")

        keys_cli(server.database_url, "revoke", key["id"], cwd=tmp_path)
        refused = httpx.get(
            f"{server.url}/v1/workflows/order-1",
            headers={"Authorization": f"Bearer {key['key']}"},
        )
        assert refused.status_code == 401
        listed = keys_cli(server.database_url, "list", "--json", cwd=tmp_path)
        [entry] = json.loads(listed.stdout)
        assert entry["revokedAt"] is not None and entry["lastUsedAt"] is not None
        assert key["key"] not in listed.stdout
    assert key["key"] not in server.log_tail(10_000)
    assert signing_secret not in server.log_tail(10_000)
