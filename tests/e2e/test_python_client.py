"""The Python client (clients/python) and its ``baton`` command against a real server.

Every resource method that has a server endpoint today is called at least once (the
schedules, batch create and graph in test_python_client_schedules.py); the jobs, queues
and flow-control methods are tested against the contract in clients/python/tests until
their endpoints exist. Also: problem documents as
``ProblemError``, an event stream resumed with ``Last-Event-ID`` after the connection
dropped, the async twin, and each ``baton`` command as a real process.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from contract import unique_id
from harness import BatonServer, HandlerClient
from helpers_client import DroppingProxy
from helpers_failure import callback_url, fixed, step

from baton import AsyncClient, Client, ProblemError
from baton.documents import Event, StepDetail, Workflow, WorkflowSummary

WAIT = 30.0


@pytest.fixture
def client(baton: BatonServer) -> Iterator[Client]:
    with Client(baton.url, api_key=baton.api_key) as client:
        yield client


def chain(handler: HandlerClient, workflow_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": workflow_id,
        "name": "client-e2e",
        "steps": [step(handler, "a"), step(handler, "b", "a", retries=fixed(0.1, 2))],
        **extra,
    }


def test_workflow_methods(client: Client, handler: HandlerClient) -> None:
    wid = unique_id("client")
    created = client.workflows.create(chain(handler, wid, context={"n": 1}))
    assert isinstance(created, Workflow) and created.id == wid
    assert client.workflows.create(chain(handler, wid, context={"n": 1})).id == wid, "idempotent"

    final = client.workflows.wait(wid, timeout=WAIT)
    assert final.status == "completed" and final.finished
    assert final.completed_steps == ["a", "b"]
    assert final.step("b").depends_on == ["a"]
    assert client.workflows.get(wid) == final

    detail = client.workflows.step(wid, "b")
    assert isinstance(detail, StepDetail)
    assert detail.attempt_log[0].outcome == "completed"
    assert client.workflows.dependencies(wid, "a").depended_on_by == ["b"]

    page = client.workflows.list(name="client-e2e", limit=1)
    assert isinstance(page.items[0], WorkflowSummary)
    assert wid in {summary.id for summary in client.workflows.list_all(name="client-e2e")}

    events = list(client.workflows.events(wid))
    assert isinstance(events[0], Event)
    assert [e.type for e in events][:2] == ["workflow.created", "workflow.started"]
    assert events[-1].type == "workflow.completed"
    later = list(client.workflows.events(wid, after=events[1].id))
    assert later == events[2:]


def test_a_create_without_an_id_is_safe_to_repeat(client: Client, handler: HandlerClient) -> None:
    body = {"steps": [step(handler, "a")]}
    first = client.workflows.create(body, idempotency_key=unique_id("key"))
    assert first.id.startswith("wf_")
    generated = client.workflows.create(body)
    assert generated.id != first.id


def test_actions(client: Client, handler: HandlerClient) -> None:
    handler.script(b=[{"status": 500}])
    wid = unique_id("client-act")
    client.workflows.create(chain(handler, wid, onError=handler.hook_url("err")))
    assert client.workflows.wait(wid, timeout=WAIT).status == "failed"

    handler.script(b=[{"status": 200}])
    assert client.workflows.retry(wid).status == "running"
    assert client.workflows.wait(wid, timeout=WAIT).status == "completed"

    again = client.workflows.retry_step(wid, "b")
    assert again.status == "running"
    assert client.workflows.wait(wid, timeout=WAIT).status == "completed"

    handler.script(a=[{"delay": 5}])
    other = unique_id("client-cancel")
    client.workflows.create(chain(handler, other))
    assert client.workflows.cancel(other).status == "cancelled"
    with pytest.raises(ProblemError) as caught:
        client.workflows.cancel(other)
    assert (caught.value.status, caught.value.code) == (409, "conflict")


def test_async_step_callbacks(client: Client, handler: HandlerClient) -> None:
    handler.script(job=[{"status": 202, "json": {"async": True}}])
    wid = unique_id("client-cb")
    client.workflows.create({"id": wid, "steps": [step(handler, "job", timeout=30)]})
    [record] = handler.wait_for(lambda records: len(records) == 1, name="job")
    url = callback_url(record)
    assert client.callbacks.heartbeat(url).step_id == "job"
    answer = client.callbacks.fail(url, "renderer crashed", retry=False)
    assert (answer.accepted, answer.status) == (True, "failed")
    with pytest.raises(ProblemError) as caught:
        client.callbacks.complete(url, {"late": True})
    assert caught.value.status == 410

    handler.script(job=[{"status": 202, "json": {"async": True}}])
    wid = unique_id("client-cb")
    client.workflows.create({"id": wid, "steps": [step(handler, "job", timeout=30)]})
    [record] = handler.wait_for(lambda records: len(records) == 2, name="job")[1:]
    assert client.callbacks.complete(callback_url(record), {"pages": 3}).status == "completed"
    assert client.workflows.wait(wid, timeout=WAIT).results == {"job": {"pages": 3}}


def test_problems(client: Client, baton: BatonServer, handler: HandlerClient) -> None:
    with pytest.raises(ProblemError) as caught:
        client.workflows.get("no-such-workflow")
    assert (caught.value.status, caught.value.code) == (404, "not-found")
    assert caught.value.detail

    bad = {"steps": [step(handler, "a", retries={"maxAttempts": 0}), {"id": "b", "url": "ftp://x"}]}
    with pytest.raises(ProblemError) as caught:
        client.workflows.create(bad)
    error = caught.value
    assert error.status == 422 and error.title == "Unprocessable Content"
    assert {e.path for e in error.errors} >= {"steps[0].retries.maxAttempts", "steps[1].url"}

    with Client(baton.url, api_key="bk_wrong") as stranger, pytest.raises(ProblemError) as caught:
        stranger.workflows.list()
    assert caught.value.status == 401


def test_server_documents(client: Client) -> None:
    assert client.health() == {"status": "ok"}
    assert client.ready()["database"] == "ok"
    assert "/v1/workflows" in client.openapi()["paths"]
    assert "# HELP" in client.metrics()


def test_following_resumes_after_the_connection_drops(
    baton: BatonServer, handler: HandlerClient
) -> None:
    wid = unique_id("client-sse")
    with Client(baton.url, api_key=baton.api_key) as direct:
        direct.workflows.create(chain(handler, wid))
        direct.workflows.wait(wid, timeout=WAIT)
        recorded = [event.id for event in direct.workflows.events(wid)]
    with (
        DroppingProxy(baton.port, events=2) as proxy,
        Client(proxy.url, api_key=baton.api_key) as client,
    ):
        followed = [event.id for event in client.workflows.events(wid, follow=True)]
    assert proxy.cut.is_set(), "the first stream was cut"
    assert followed == recorded, "every event once, in order, across the reconnection"
    streams = [r for r in proxy.requests if b"text/event-stream" in r.lower()]
    assert len(streams) == 2
    assert f"last-event-id: {recorded[1]}".encode() in streams[1].lower()


def test_following_a_running_workflow_live(client: Client, handler: HandlerClient) -> None:
    handler.script(a=[{"delay": 1}])
    wid = unique_id("client-live")
    client.workflows.create(chain(handler, wid))
    types = [event.type for event in client.workflows.events(wid, follow=True)]
    assert types[0] == "workflow.created" and types[-1] == "workflow.completed"
    assert "step.started" in types


def test_the_async_twin(baton: BatonServer, handler: HandlerClient) -> None:
    async def scenario() -> None:
        async with AsyncClient(baton.url, api_key=baton.api_key) as client:
            wid = unique_id("client-async")
            created = await client.workflows.create(chain(handler, wid))
            assert created.id == wid
            streamed = [e.type async for e in client.workflows.events(wid, follow=True)]
            assert streamed[-1] == "workflow.completed"
            final = await client.workflows.wait(wid, timeout=WAIT)
            assert final.status == "completed"
            assert (await client.workflows.get(wid)) == final
            assert (await client.workflows.step(wid, "a")).status == "completed"
            assert (await client.workflows.dependencies(wid, "b")).depends_on == ["a"]
            assert (await client.workflows.list(name="client-e2e")).items
            assert len([e async for e in client.workflows.events(wid)]) > 4
            assert (await client.workflows.retry_step(wid, "b")).status == "running"
            await client.workflows.wait(wid, timeout=WAIT)
            with pytest.raises(ProblemError) as caught:
                await client.workflows.retry(wid)
            assert caught.value.status == 409
            assert (await client.health())["status"] == "ok"

    asyncio.run(scenario())


# --- the `baton` command, as a real process --------------------------------------------


def baton_command(
    server: BatonServer, *argv: str, key: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
    env.update(BATON_URL=server.url, BATON_API_KEY=key or server.api_key)
    script = Path(sys.executable).with_name("baton")
    return subprocess.run(
        [str(script), *argv], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_the_command_line(baton: BatonServer, handler: HandlerClient, tmp_path: Path) -> None:
    wid = unique_id("cli")
    path = tmp_path / "workflow.json"
    path.write_text(json.dumps(chain(handler, wid)))

    created = baton_command(baton, "workflows", "create", str(path), "--json")
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["id"] == wid

    watched = baton_command(baton, "workflows", "watch", wid)
    assert watched.returncode == 0, watched.stderr
    assert "completed" in watched.stdout and "b" in watched.stdout

    got = baton_command(baton, "workflows", "get", wid, "--json")
    assert json.loads(got.stdout)["status"] == "completed"
    human = baton_command(baton, "workflows", "get", wid)
    assert wid in human.stdout and "✓ completed" in human.stdout

    listed = baton_command(baton, "--json", "workflows", "list", "--name", "client-e2e")
    assert wid in {item["id"] for item in json.loads(listed.stdout)["items"]}

    events = baton_command(baton, "workflows", "events", wid, "--follow", "--json")
    types = [json.loads(line)["type"] for line in events.stdout.splitlines()]
    assert types[0] == "workflow.created" and types[-1] == "workflow.completed"

    retried = baton_command(baton, "workflows", "retry", wid, "--step", "b", "--json")
    assert json.loads(retried.stdout)["status"] == "running", retried.stderr
    assert baton_command(baton, "workflows", "watch", wid, "--json").returncode == 0


def test_the_command_line_exit_codes(
    baton: BatonServer, handler: HandlerClient, tmp_path: Path
) -> None:
    handler.script(b=[{"status": 500}])
    wid = unique_id("cli-fail")
    path = tmp_path / "workflow.json"
    path.write_text(json.dumps(chain(handler, wid)))
    baton_command(baton, "workflows", "create", str(path))
    watched = baton_command(baton, "workflows", "watch", wid)
    assert watched.returncode == 1, "a failed workflow"
    assert "failed" in watched.stdout

    retried = baton_command(baton, "workflows", "retry", wid)
    assert retried.returncode == 0, retried.stderr
    handler.script(b=[{"delay": 5}])
    cancelled = baton_command(baton, "workflows", "cancel", wid, "--json")
    assert json.loads(cancelled.stdout)["status"] == "cancelled"

    missing = baton_command(baton, "workflows", "get", "no-such-workflow")
    assert missing.returncode == 3
    assert missing.stdout == ""
    assert missing.stderr.count("\n") == 1 and missing.stderr.startswith("baton: 404 Not Found")
    assert "Traceback" not in missing.stderr

    refused = baton_command(baton, "workflows", "list", key="bk_wrong")
    assert refused.returncode == 3 and "401" in refused.stderr
