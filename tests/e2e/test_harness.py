"""The server harness itself: extra environment, ``kill -9`` and restart on one database."""

from __future__ import annotations

import httpx
import pytest
from contract import unique_id
from harness import BatonFactory, HandlerClient


def test_a_killed_server_restarts_on_the_same_database_and_port(
    baton_factory: BatonFactory, handler: HandlerClient
) -> None:
    server = baton_factory.create(extra_env={"BATON_LEASE_SECONDS": "5"})
    assert server.environment()["BATON_LEASE_SECONDS"] == "5"
    wid = unique_id("restart")
    with server.client() as api:
        api.create({"id": wid, "steps": [{"id": "a", "url": handler.step_url("a")}]})
        api.wait_status(wid, "completed", 30)
        port, pid = server.port, server.pid

        assert server.kill() == -9
        assert not server.is_running()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{server.url}/healthz", timeout=2)

        server.restart(extra_env={"BATON_MAX_CONCURRENCY": "8"})
        assert (server.port, server.is_running()) == (port, True)
        assert server.pid != pid
        assert server.environment()["BATON_MAX_CONCURRENCY"] == "8"
        assert api.get(wid)["status"] == "completed"

    assert len(handler.requests("a", workflow_id=wid)) == 1
    log = server.log_tail(200)
    assert "start #2" in log
    assert "exited with code -9" in log
