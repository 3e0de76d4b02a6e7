"""The handler app and the process harness on their own, without a Baton server."""

from __future__ import annotations

import json
import math
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from harness import (
    BatonServer,
    HandlerApp,
    HandlerClient,
    ServerStartError,
    UvicornProcess,
    random_signing_secret,
)
from standardwebhooks.webhooks import Webhook


def signed_headers(secret: str, body: str, msg_id: str = "msg_1") -> dict[str, str]:
    now = datetime.now(UTC)
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(math.floor(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, now, body),
    }


def post(url: str, body: str = "{}", headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(url, content=body.encode(), headers=headers or {}, timeout=10)


def test_default_answer_records_a_verified_request(
    handler: HandlerClient, signing_secret: str
) -> None:
    body = json.dumps({"workflowId": "wf-1", "stepId": "a", "attempt": 2})
    headers = signed_headers(signing_secret, body) | {
        "Baton-Attempt": "2",
        "Baton-Workflow-Id": "wf-1",
    }

    response = post(handler.step_url("a"), body, headers)

    assert response.status_code == 200
    assert response.json() == {"success": True, "result": {"step": handler.name("a"), "attempt": 2}}
    [record] = handler.requests()
    assert record["name"] == "a"
    assert record["full_name"] == handler.name("a")
    assert record["kind"] == "steps"
    assert record["path"] == f"/steps/{handler.name('a')}"
    assert record["body"] == body
    assert record["json"] == json.loads(body)
    assert record["headers"]["baton-attempt"] == "2"
    assert record["verified"] is True, record["verify_error"]
    assert record["response_status"] == 200
    assert record["received_mono"] <= record["ended_mono"]
    assert record["received_at"] <= record["ended_at"]
    assert handler.requests("a", workflow_id="wf-1") == [record]
    assert handler.requests("a", workflow_id="wf-2") == []
    assert handler.requests(kind="hooks") == []


def test_unsigned_or_tampered_requests_do_not_verify(
    handler: HandlerClient, signing_secret: str
) -> None:
    post(handler.hook_url("h"), '{"a": 1}')
    headers = signed_headers(signing_secret, '{"a": 1}')
    post(handler.hook_url("h"), '{"a": 2}', headers)
    post(handler.hook_url("h"), '{"a": 1}', headers | {"webhook-id": "other"})
    post(handler.hook_url("h"), '{"a": 1}', headers)

    records = handler.requests("h")
    assert [r["verified"] for r in records] == [False, False, False, True]
    assert all(r["kind"] == "hooks" for r in records)
    assert "Missing required headers" in records[0]["verify_error"]


def test_script_answers_in_order_and_repeats_the_last(handler: HandlerClient) -> None:
    handler.script(
        a=[
            {"status": 503, "headers": {"Retry-After": "1"}},
            {"status": 200, "body": "plain text"},
            {"status": 201, "json": {"success": False, "error": "nope"}},
        ],
        b=[{"status": 204}],
        c=[{"status": 202}],
    )

    answers = [post(handler.step_url("a")) for _ in range(4)]
    no_content = post(handler.step_url("b"))
    accepted = post(handler.step_url("c"), headers={"Baton-Attempt": "1"})

    assert [r.status_code for r in answers] == [503, 200, 201, 201]
    assert answers[0].headers["retry-after"] == "1"
    assert answers[0].content == b""
    assert answers[1].text == "plain text"
    assert answers[1].headers["content-type"].startswith("text/plain")
    assert answers[3].json() == {"success": False, "error": "nope"}
    assert no_content.status_code == 204
    assert no_content.content == b""
    # A 2xx without a scripted body gets the default answer.
    assert accepted.json() == {"success": True, "result": {"step": handler.name("c"), "attempt": 1}}
    assert [r["response_status"] for r in handler.requests("a")] == [503, 200, 201, 201]
    # A new script starts counting again.
    handler.script(a=[{"status": 500}, {"status": 200}])
    assert [post(handler.step_url("a")).status_code for _ in range(3)] == [500, 200, 200]


def test_delayed_answers_overlap(handler: HandlerClient) -> None:
    handler.script(slow=[{"delay": 0.5}])
    threads = [threading.Thread(target=post, args=(handler.step_url("slow"),)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    records = handler.requests("slow")
    assert len(records) == 3
    for record in records:
        assert record["ended_mono"] - record["received_mono"] >= 0.45
        assert record["response_status"] == 200
    assert max(r["received_mono"] for r in records) < min(r["ended_mono"] for r in records)


def test_in_flight_requests_are_listed_before_they_are_answered(handler: HandlerClient) -> None:
    handler.script(slow=[{"delay": 1}])
    thread = threading.Thread(target=post, args=(handler.step_url("slow"),))
    thread.start()
    try:
        [record] = handler.wait_for(lambda records: len(records) == 1, 5, name="slow")
        assert record["ended_mono"] is None
        [done] = handler.wait_count(1, "slow", timeout=5)
        assert done["ended_mono"] is not None
    finally:
        thread.join()


def test_namespaces_are_isolated_and_reset_clears_everything(
    handler: HandlerClient, handler_app: HandlerApp
) -> None:
    with handler_app.client() as root:
        other = root.scoped()
        handler.script(a=[{"status": 500}])
        post(handler.step_url("a"))
        post(other.step_url("a"))

        assert [r["response_status"] for r in handler.requests()] == [500]
        assert [r["response_status"] for r in other.requests()] == [200]
        assert len(root.requests()) >= 2

        root.reset()
        assert handler.requests() == []
        assert post(handler.step_url("a")).status_code == 200


def test_wait_for_gives_up_with_the_records_seen(handler: HandlerClient) -> None:
    post(handler.step_url("a"))
    with pytest.raises(AssertionError, match="not met within"):
        handler.wait_count(2, "a", timeout=0.3)


def test_control_api_rejects_a_malformed_script(handler_app: HandlerApp) -> None:
    response = httpx.post(f"{handler_app.url}/_control/script", json={"a": 5})
    assert response.status_code == 400


def test_a_process_can_be_killed_and_restarted_on_its_port(tmp_path: Path) -> None:
    app = HandlerApp(tmp_path / "handler.log", random_signing_secret())
    app.start()
    try:
        port, pid = app.port, app.pid
        assert app.kill() == -9
        assert not app.is_running()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{app.url}/_control/health", timeout=2)

        app.restart()
        assert app.port == port
        assert app.pid != pid
        assert httpx.get(f"{app.url}/_control/health", timeout=2).json()["verifying"] is True
    finally:
        app.stop()
    assert not app.is_running()
    log = (tmp_path / "handler.log").read_text()
    assert "start #1" in log
    assert "start #2" in log
    assert "exited with code -9" in log


class _Exits(UvicornProcess):
    label = "exits"

    def command(self) -> list[str]:
        return [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"]

    def environment(self) -> dict[str, str]:
        return {}


def test_a_server_that_exits_at_start_fails_with_its_log(tmp_path: Path) -> None:
    process = _Exits(log_path=tmp_path / "exits.log")
    with pytest.raises(ServerStartError, match=r"(?s)exited with code 3.*boom"):
        process.start(timeout=10)
    assert not process.is_running()


def test_baton_environment_is_only_what_the_harness_sets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATON_MAX_CONCURRENCY", "1")
    server = BatonServer(
        tmp_path, api_key="key-1", extra_env={"BATON_LEASE_SECONDS": "2"}, port=8123
    )

    env = server.environment()

    assert "BATON_MAX_CONCURRENCY" not in env
    assert env["BATON_DATABASE_URL"] == f"sqlite://{tmp_path}/baton.sqlite3"
    assert env["BATON_DATA_DIR"] == str(tmp_path)
    assert env["BATON_API_KEYS"] == "key-1"
    assert env["BATON_SIGNING_SECRETS"].startswith("whsec_")
    assert env["BATON_ALLOW_PRIVATE_NETWORKS"] == "true"
    assert env["BATON_PUBLIC_URL"] == "http://127.0.0.1:8123"
    assert env["BATON_LOG_LEVEL"] == "info"
    assert env["BATON_LEASE_SECONDS"] == "2"
    assert server.command()[-4:] == ["--host", "127.0.0.1", "--port", "8123"]
    assert BatonServer(tmp_path, database_url="postgres://u@h/db").environment()[
        "BATON_DATABASE_URL"
    ] == ("postgres://u@h/db")
