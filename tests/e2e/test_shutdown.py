"""SIGTERM with an event stream open: the stream ends and the server stops promptly."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from harness import BatonClient, BatonFactory, BatonServer, HandlerClient

pytestmark = pytest.mark.slow


def test_sigterm_ends_open_event_streams(
    baton_factory: BatonFactory, handler: HandlerClient
) -> None:
    server = baton_factory.create(extra_env={"BATON_SHUTDOWN_GRACE": "2"})
    with server.client() as api:
        _stop_with_a_stream_open(server, api, handler)


def _stop_with_a_stream_open(server: BatonServer, api: BatonClient, handler: HandlerClient) -> None:
    # A step that takes a long time keeps the workflow (and its event stream) open.
    handler.script(slow=[{"status": 200, "delay": 30}])
    api.create({"id": "streamed", "steps": [{"id": "slow", "url": handler.step_url("slow")}]})
    lines: list[str] = []

    def read_stream() -> None:
        with httpx.stream(
            "GET",
            f"{server.url}/v1/workflows/streamed/events",
            headers={**api.auth_headers, "Accept": "text/event-stream"},
            timeout=60,
        ) as response:
            for line in response.iter_lines():
                lines.append(line)

    reader = threading.Thread(target=read_stream, daemon=True)
    reader.start()
    deadline = time.monotonic() + 10
    while not any("step.started" in line for line in lines) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any("workflow.created" in line for line in lines)
    started = time.monotonic()
    code = server.stop(timeout=20)
    elapsed = time.monotonic() - started
    reader.join(5)
    assert not reader.is_alive(), "the event stream did not end"
    # uvicorn re-raises the SIGTERM it handled once it has shut down cleanly.
    assert code in (0, -15), server.log_tail()
    assert "Application shutdown complete" in server.log_tail()
    # The stream ended at once; the rest is the 2 s grace for the request in flight.
    assert elapsed < 10, f"stopping took {elapsed:.1f} s"
