"""The handler app's ``then`` follow-ups on their own, without a Baton server."""

from __future__ import annotations

import httpx
from harness import HandlerClient
from helpers_failure import followed_up


def test_then_posts_to_the_callback_url_after_answering(handler: HandlerClient) -> None:
    handler.script(
        job=[
            {
                "status": 202,
                "json": {"async": True},
                "then": [
                    {"delay": 0.3, "json": {"success": True, "result": 7}},
                    {"path": "/heartbeat", "json": {}},
                    {"url": handler.hook_url("other"), "body": "raw"},
                ],
            },
            {"status": 200},
        ],
        cb=[{"status": 200, "json": {"accepted": True}}],
    )
    body = {"callbackUrl": handler.hook_url("cb")}

    answer = httpx.post(handler.step_url("job"), json=body, timeout=10)
    assert answer.status_code == 202
    assert answer.json() == {"async": True}
    [job] = handler.wait_for(lambda r: followed_up(r, 1, 3), name="job")

    first, second, third = job["followups"]
    assert first["url"] == handler.hook_url("cb")
    assert (first["status"], first["json"], first["error"]) == (200, {"accepted": True}, None)
    assert first["sent_mono"] - job["ended_mono"] >= 0.3 * 0.9
    assert second["url"] == handler.hook_url("cb") + "/heartbeat"
    assert second["status"] == 200
    assert second["sent_mono"] >= first["ended_mono"]
    assert third["url"] == handler.hook_url("other")
    assert third["status"] == 200
    callbacks = handler.requests("cb")
    assert [r["path"] for r in callbacks] == [
        f"/hooks/{handler.name('cb')}",
        f"/hooks/{handler.name('cb')}/heartbeat",
    ]
    assert callbacks[0]["json"] == {"success": True, "result": 7}
    assert callbacks[1]["json"] == {}
    assert handler.requests("other")[0]["body"] == "raw"

    # The next scripted answer has no follow-ups and the record says so.
    httpx.post(handler.step_url("job"), json=body, timeout=10).raise_for_status()
    assert "followups" not in handler.requests("job")[1]


def test_then_without_a_callback_url_records_the_problem(handler: HandlerClient) -> None:
    handler.script(job=[{"status": 200, "then": [{"json": {"success": True}}]}])

    httpx.post(handler.step_url("job"), json={"no": "url"}, timeout=10).raise_for_status()

    [job] = handler.wait_for(followed_up, name="job")
    [outcome] = job["followups"]
    assert outcome["status"] is None
    assert "callbackUrl" in outcome["error"]
