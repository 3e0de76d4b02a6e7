"""The Python client's schedules, batch create and graph, and ``baton schedules``, against
a real server (DESIGN §8, §11): the methods clients/python/tests check against fakes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from contract import unique_id
from harness import BatonServer, HandlerClient
from helpers_failure import step
from test_python_client import baton_command

from baton import AsyncClient, Client, ProblemError
from baton.documents import Graph, GraphEdge, GraphNode, Schedule, ScheduleRun, Workflow

WAIT = 30.0


@pytest.fixture
def client(baton: BatonServer) -> Iterator[Client]:
    with Client(baton.url, api_key=baton.api_key) as client:
        yield client


def nightly(handler: HandlerClient, **fields: Any) -> dict[str, Any]:
    return {
        "cron": "0 3 * * *",
        "timezone": "Europe/Paris",
        "workflow": {"name": "nightly", "steps": [step(handler, "report")]},
        **fields,
    }


def test_schedule_methods(client: Client, handler: HandlerClient) -> None:
    sid = unique_id("client-schedule")
    created = client.schedules.put(sid, nightly(handler))
    assert isinstance(created, Schedule) and created.id == sid
    assert created.timezone == "Europe/Paris" and created.next_run_at.endswith("Z")
    assert client.schedules.put(sid, nightly(handler, jitter=5)).jitter == 5
    assert client.schedules.get(sid).cron == "0 3 * * *"
    assert sid in {s.id for s in client.schedules.list(limit=500).items}

    paused = client.schedules.pause(sid)
    assert paused.paused and paused.next_run_at is None
    assert not client.schedules.resume(sid).paused

    fired = client.schedules.trigger(sid)
    assert fired["id"].startswith(sid + "-") and fired["scheduleId"] == sid
    done = client.workflows.wait(fired["id"], timeout=WAIT)
    assert done.status == "completed" and done.schedule_id == sid
    schedule = client.schedules.get(sid)
    assert schedule.fired_count == 1
    [run] = schedule.recent_runs
    assert isinstance(run, ScheduleRun)
    assert (run.workflow_id, run.outcome) == (fired["id"], "fired")

    client.schedules.delete(sid)
    with pytest.raises(ProblemError) as missing:
        client.schedules.get(sid)
    assert missing.value.status == 404
    with pytest.raises(ProblemError) as refused:
        client.schedules.put(sid, nightly(handler, cron="61 * * * *"))
    assert refused.value.status == 422
    assert [e.path for e in refused.value.errors] == ["cron"]


def test_create_batch_and_graph(client: Client, handler: HandlerClient) -> None:
    ids = [unique_id("client-batch") for _ in range(3)]
    bodies = [{"id": wid, "steps": [step(handler, "a"), step(handler, "b", "a")]} for wid in ids]
    created = client.workflows.create_batch(bodies)
    assert [w.id for w in created] == ids and all(isinstance(w, Workflow) for w in created)
    assert [w.id for w in client.workflows.create_batch(bodies)] == ids  # as they are
    client.workflows.wait(ids[0], timeout=WAIT)
    graph = client.workflows.graph(ids[0])
    assert isinstance(graph, Graph)
    assert all(isinstance(n, GraphNode) for n in graph.nodes)
    assert [(n.id, n.status, n.kind, n.attempts) for n in graph.nodes] == [
        ("a", "completed", "step", 1),
        ("b", "completed", "step", 1),
    ]
    [edge] = graph.edges
    assert isinstance(edge, GraphEdge) and (edge.from_, edge.to) == ("a", "b")


def test_the_async_twin(baton: BatonServer, handler: HandlerClient) -> None:
    async def scenario() -> None:
        async with AsyncClient(baton.url, api_key=baton.api_key) as client:
            sid = unique_id("async-schedule")
            assert (await client.schedules.put(sid, nightly(handler))).id == sid
            fired = await client.schedules.trigger(sid)
            assert (await client.workflows.graph(fired["id"])).nodes[0].id == "report"
            await client.schedules.delete(sid)

    asyncio.run(scenario())


def test_the_schedules_commands(baton: BatonServer, handler: HandlerClient, tmp_path: Path) -> None:
    sid = unique_id("cli-schedule")
    path = tmp_path / "schedule.json"
    path.write_text(json.dumps(nightly(handler)))

    put = baton_command(baton, "schedules", "put", sid, str(path), "--json")
    assert put.returncode == 0, put.stderr
    assert json.loads(put.stdout)["id"] == sid
    listed = baton_command(baton, "--json", "schedules", "list")
    assert sid in {item["id"] for item in json.loads(listed.stdout)["items"]}
    human = baton_command(baton, "schedules", "list")
    assert sid[:12] in human.stdout and "0 3 * * *" in human.stdout and "active" in human.stdout

    paused = baton_command(baton, "schedules", "pause", sid)
    assert paused.returncode == 0 and f"schedule {sid}: paused" in paused.stdout
    resumed = baton_command(baton, "schedules", "resume", sid)
    assert f"schedule {sid}: active" in resumed.stdout
    fired = baton_command(baton, "schedules", "trigger", sid)
    assert fired.returncode == 0, fired.stderr
    assert f"schedule {sid} fired: workflow {sid}-" in fired.stdout
