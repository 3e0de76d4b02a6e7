"""The client's behaviour around the requests: problems, retries, timeouts, documents,
``wait``, event paging and following (with resumption after a dropped connection)."""

from __future__ import annotations

import json
import pickle
from typing import Any

import httpx
import pytest
from fakes import BrokenStream, Recorder, answer, event_doc, sse, workflow_doc

import baton
from baton import (
    APIConnectionError,
    APITimeoutError,
    AsyncClient,
    Client,
    InvalidResponse,
    ProblemError,
    WaitTimeout,
)
from baton._base import retry_delay
from baton._calls import get_workflow
from baton.documents import Step, StepError, Workflow, WorkflowStatus
from baton.errors import FieldError

KEY = "bk_test"
BASE = "http://baton.test"
PROBLEM = {
    "type": "https://baton.dev/problems/validation-failed",
    "title": "Unprocessable Content",
    "status": 422,
    "detail": "The request has 2 problems.",
    "errors": [
        {"path": "steps[1].dependsOn[0]", "message": "unknown step 'valdate'"},
        {"path": "steps", "message": "cycle: a -> b -> a"},
    ],
    "instance": "/v1/workflows",
}


@pytest.fixture(autouse=True)
def no_sleeping(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the client's pauses instead of sleeping through them."""
    slept: list[float] = []

    async def asleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr("baton._base.time.sleep", slept.append)
    monkeypatch.setattr("baton._base.asyncio.sleep", asleep)
    monkeypatch.setattr("baton.resources.time.sleep", slept.append)
    monkeypatch.setattr("baton.resources.asyncio.sleep", asleep)
    return slept


def client_for(recorder: Recorder, **options: Any) -> Client:
    return Client(BASE, api_key=KEY, transport=httpx.MockTransport(recorder), **options)


def async_client_for(recorder: Recorder, **options: Any) -> AsyncClient:
    return AsyncClient(BASE, api_key=KEY, transport=httpx.MockTransport(recorder), **options)


# --- problems ---------------------------------------------------------------------------


def test_a_problem_document_becomes_one_problem_error(recorder: Recorder) -> None:
    recorder.then(answer(422, PROBLEM))
    with client_for(recorder) as client, pytest.raises(ProblemError) as caught:
        client.workflows.create({"id": "x", "steps": []})
    error = caught.value
    assert (error.status, error.title, error.detail) == (
        422,
        "Unprocessable Content",
        "The request has 2 problems.",
    )
    assert error.errors == [
        FieldError("steps[1].dependsOn[0]", "unknown step 'valdate'"),
        FieldError("steps", "cycle: a -> b -> a"),
    ]
    assert error.type == PROBLEM["type"]
    assert error.code == "validation-failed"
    assert error.document["instance"] == "/v1/workflows", "unknown fields are kept"
    assert error.response is not None and error.response.status_code == 422
    assert str(error) == (
        "422 Unprocessable Content: The request has 2 problems. "
        "(steps[1].dependsOn[0]: unknown step 'valdate'; steps: cycle: a -> b -> a)"
    )
    assert isinstance(error, baton.BatonError)


def test_a_document_s_own_code_wins(recorder: Recorder) -> None:
    recorder.then(
        answer(
            409,
            {
                "type": "https://baton.dev/problems/conflict",
                "title": "Conflict",
                "status": 409,
                "detail": "lease lost",
                "code": "lease_lost",
            },
        )
    )
    with client_for(recorder) as client, pytest.raises(ProblemError) as caught:
        client.jobs.complete("j", "old-lease")
    assert (caught.value.status, caught.value.code) == (409, "lease_lost")


def test_an_error_without_a_problem_document(recorder: Recorder) -> None:
    recorder.then(httpx.Response(502, text="<html><body>Bad   gateway</body></html>"))
    with client_for(recorder, max_retries=0) as client, pytest.raises(ProblemError) as caught:
        client.workflows.get("order-1")
    error = caught.value
    assert (error.status, error.title, error.errors) == (502, "Bad Gateway", [])
    assert error.detail == "<html><body>Bad gateway</body></html>"
    assert error.code == "about:blank"


def test_a_success_that_is_not_json(recorder: Recorder) -> None:
    recorder.then(httpx.Response(200, text="<html>"))
    with client_for(recorder) as client, pytest.raises(InvalidResponse, match="not JSON"):
        client.workflows.get("order-1")


def test_a_success_of_the_wrong_shape(recorder: Recorder) -> None:
    recorder.then(answer(200, {"no": "items"}))
    with client_for(recorder) as client, pytest.raises(InvalidResponse, match="unexpected"):
        client.workflows.list()


# --- retries and timeouts ----------------------------------------------------------------


def test_an_idempotent_call_is_retried_after_a_broken_connection(
    recorder: Recorder, no_sleeping: list[float]
) -> None:
    recorder.then(
        httpx.ReadError("reset"), httpx.RemoteProtocolError("eof"), answer(200, workflow_doc())
    )
    with client_for(recorder, max_retries=2) as client:
        assert client.workflows.get("order-1").id == "order-1"
    assert len(recorder.requests) == 3
    assert len(no_sleeping) == 2
    assert all(0 <= pause <= 8 for pause in no_sleeping)


def test_retries_run_out(recorder: Recorder) -> None:
    recorder.default = httpx.ConnectError("refused")
    with client_for(recorder, max_retries=3) as client, pytest.raises(APIConnectionError) as caught:
        client.workflows.get("order-1")
    assert len(recorder.requests) == 4
    assert "GET /v1/workflows/order-1 failed: ConnectError: refused" in str(caught.value)
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


def test_a_call_that_is_not_idempotent_is_retried_only_when_nothing_was_sent(
    recorder: Recorder,
) -> None:
    recorder.then(httpx.ConnectError("refused"), answer(200, workflow_doc()))
    with client_for(recorder) as client:
        client.workflows.cancel("order-1")
    assert len(recorder.requests) == 2

    recorder.then(httpx.ReadError("reset"))
    with client_for(recorder) as client, pytest.raises(APIConnectionError):
        client.workflows.cancel("order-1")
    assert len(recorder.requests) == 3, "a cancel that may have arrived is not sent again"


def test_a_timeout_is_its_own_error(recorder: Recorder) -> None:
    recorder.then(httpx.ReadTimeout("slow"))
    with client_for(recorder) as client, pytest.raises(APITimeoutError, match="timed out"):
        client.jobs.fail("j", "l", "boom")
    assert len(recorder.requests) == 1


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_overloaded_answers_are_retried_for_idempotent_calls(
    recorder: Recorder, no_sleeping: list[float], status: int
) -> None:
    recorder.then(
        answer(status, {"status": status, "title": "x"}, **{"Retry-After": "2"}),
        answer(200, workflow_doc()),
    )
    with client_for(recorder) as client:
        client.workflows.get("order-1")
    assert no_sleeping == [2.0]


def test_overloaded_answers_of_other_calls_are_raised(recorder: Recorder) -> None:
    recorder.then(answer(503, {"status": 503, "title": "Service Unavailable"}))
    with client_for(recorder) as client, pytest.raises(ProblemError) as caught:
        client.workflows.retry("order-1")
    assert caught.value.status == 503


def test_a_retry_after_too_long_is_not_waited_for(recorder: Recorder) -> None:
    recorder.then(answer(503, {"status": 503}, **{"Retry-After": "3600"}))
    with client_for(recorder) as client, pytest.raises(ProblemError):
        client.workflows.get("order-1")
    assert len(recorder.requests) == 1


def test_retry_delay_reads_http_dates() -> None:
    response = httpx.Response(503, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert retry_delay(get_workflow("x"), 0, 2, response=response) == 0.0


async def test_the_async_client_retries_the_same_way(
    recorder: Recorder, no_sleeping: list[float]
) -> None:
    recorder.then(
        httpx.ConnectError("refused"), httpx.ReadError("reset"), answer(200, workflow_doc())
    )
    async with async_client_for(recorder) as client:
        await client.workflows.get("order-1")
    assert len(recorder.requests) == 3
    recorder.then(httpx.ReadTimeout("slow"))
    async with async_client_for(recorder) as client:
        with pytest.raises(APITimeoutError):
            await client.workflows.retry_step("order-1", "a")


def test_timeouts_are_passed_to_httpx(recorder: Recorder) -> None:
    recorder.default = answer(200, workflow_doc())
    with client_for(recorder, timeout=7.5) as client:
        client.workflows.get("order-1")
    assert recorder.last.extensions["timeout"] == {
        "connect": 7.5,
        "read": 7.5,
        "write": 7.5,
        "pool": 7.5,
    }
    with client_for(recorder, timeout=httpx.Timeout(3, connect=1)) as client:
        client.workflows.get("order-1")
    assert recorder.last.extensions["timeout"]["connect"] == 1


# --- documents ------------------------------------------------------------------------


def test_documents_are_dicts_that_read_as_typed_objects(recorder: Recorder) -> None:
    recorder.then(answer(200, workflow_doc(futureField={"x": 1})))
    with client_for(recorder) as client:
        doc = client.workflows.get("order-1")
    assert isinstance(doc, dict)
    assert doc == workflow_doc(futureField={"x": 1})
    assert json.loads(json.dumps(doc)) == doc
    assert doc.current_steps == ["validate"] and doc["currentSteps"] == ["validate"]
    assert doc.fail_fast is True
    assert doc.future_field == {"x": 1}, "fields the client does not know still read"
    step = doc.steps[0]
    assert isinstance(step, Step) and isinstance(step.error, StepError)
    assert step.error.http_status == 503
    assert doc.step("validate") is step
    with pytest.raises(KeyError):
        doc.step("nope")
    with pytest.raises(AttributeError, match="no field 'scheduleId'"):
        _ = doc.schedule_id
    with pytest.raises(AttributeError):
        doc.status = "completed"  # type: ignore[misc]
    assert doc.status == WorkflowStatus.RUNNING
    assert not doc.finished
    assert pickle.loads(pickle.dumps(doc)) == doc


def test_graph_edges_read_from_(recorder: Recorder) -> None:
    recorder.then(answer(200, {"nodes": [], "edges": [{"from": "a", "to": "b"}]}))
    with client_for(recorder) as client:
        edge = client.workflows.graph("order-1").edges[0]
    assert (edge.from_, edge.to) == ("a", "b")


# --- wait -------------------------------------------------------------------------------


def test_wait_polls_until_the_workflow_is_finished(
    recorder: Recorder, no_sleeping: list[float]
) -> None:
    recorder.then(
        *(answer(200, workflow_doc()) for _ in range(5)),
        answer(200, workflow_doc(status="compensated")),
    )
    with client_for(recorder) as client:
        final = client.workflows.wait("order-1", timeout=None, poll_interval=0.3)
    assert final.status == "compensated" and isinstance(final, Workflow)
    assert no_sleeping == pytest.approx([0.1, 0.15, 0.225, 0.3, 0.3])


def test_wait_gives_up_with_the_last_document(recorder: Recorder) -> None:
    recorder.default = answer(200, workflow_doc())
    with client_for(recorder) as client, pytest.raises(WaitTimeout) as caught:
        client.workflows.wait("order-1", timeout=0)
    assert isinstance(caught.value, TimeoutError)
    assert caught.value.document is not None and caught.value.document["status"] == "running"
    assert "still 'running' after 0 s" in str(caught.value)


async def test_async_wait(recorder: Recorder) -> None:
    recorder.then(answer(200, workflow_doc()), answer(200, workflow_doc(status="failed")))
    async with async_client_for(recorder) as client:
        assert (await client.workflows.wait("order-1")).status == "failed"
    recorder.default = answer(200, workflow_doc())
    async with async_client_for(recorder) as client:
        with pytest.raises(WaitTimeout):
            await client.workflows.wait("order-1", timeout=0)


# --- events -----------------------------------------------------------------------------


def test_events_page_through_next_after(recorder: Recorder) -> None:
    recorder.then(
        answer(200, {"items": [event_doc(1), event_doc(2)], "nextAfter": 2}),
        answer(200, {"items": [event_doc(3)], "nextAfter": None}),
    )
    with client_for(recorder) as client:
        ids = [event.id for event in client.workflows.events("order-1", after=0, limit=2)]
    assert ids == [1, 2, 3]
    assert [dict(r.url.params) for r in recorder.requests] == [
        {"after": "0", "limit": "2"},
        {"after": "2", "limit": "2"},
    ]


def test_events_from_a_server_without_paging(recorder: Recorder) -> None:
    recorder.then(answer(200, {"items": [event_doc(1), event_doc(2)]}))
    recorder.then(answer(200, {"items": [event_doc(1), event_doc(2), event_doc(3)]}))
    with client_for(recorder) as client:
        assert len(list(client.workflows.events("order-1"))) == 2
        assert [e.id for e in client.workflows.events("order-1", after=1)] == [2, 3]


def stream(*chunks: bytes, broken: bool = False) -> httpx.Response:
    headers = {"content-type": "text/event-stream"}
    if broken:
        return httpx.Response(200, headers=headers, stream=BrokenStream(*chunks))
    return httpx.Response(200, headers=headers, content=b"".join(chunks))


def follow_script(recorder: Recorder) -> None:
    recorder.then(
        # The first connection sends two events, then drops in the middle of a third.
        stream(sse([event_doc(1), event_doc(2)]), b"id: 3\nda", broken=True),
        # The second resumes after event 2 and ends with the workflow.
        stream(b": keep-alive\n\n", sse([event_doc(3), event_doc(4, "workflow.completed")])),
        answer(200, workflow_doc(status="completed")),
    )


def check_followed(recorder: Recorder, ids: list[int]) -> None:
    assert ids == [1, 2, 3, 4], "no event lost or repeated across the reconnection"
    first, second, last = recorder.requests
    assert first.headers["accept"] == "text/event-stream"
    assert "last-event-id" not in first.headers
    assert second.headers["last-event-id"] == "2"
    assert last.method == "GET" and last.url.path == "/v1/workflows/order-1"


def test_following_resumes_after_a_dropped_connection(recorder: Recorder) -> None:
    follow_script(recorder)
    with client_for(recorder) as client:
        ids = [event.id for event in client.workflows.events("order-1", follow=True)]
    check_followed(recorder, ids)


async def test_async_following_resumes_after_a_dropped_connection(recorder: Recorder) -> None:
    follow_script(recorder)
    async with async_client_for(recorder) as client:
        ids = [event.id async for event in client.workflows.events("order-1", follow=True)]
    check_followed(recorder, ids)


def test_following_reconnects_when_a_stream_ends_before_the_workflow(recorder: Recorder) -> None:
    recorder.then(
        stream(sse([event_doc(1)])),
        answer(200, workflow_doc(status="running")),
        stream(sse([event_doc(2, "workflow.failed")])),
        answer(200, workflow_doc(status="failed")),
    )
    with client_for(recorder) as client:
        ids = [e.id for e in client.workflows.events("order-1", follow=True, after=0)]
    assert ids == [1, 2]
    assert recorder.requests[0].headers["last-event-id"] == "0"
    assert recorder.requests[2].headers["last-event-id"] == "1"


def test_following_gives_up_after_reconnections_without_events(recorder: Recorder) -> None:
    recorder.default = httpx.ConnectError("refused")
    with client_for(recorder) as client, pytest.raises(APIConnectionError, match="keeps dropping"):
        list(client.workflows.events("order-1", follow=True))
    assert len(recorder.requests) == 6


def test_following_an_unknown_workflow_raises_its_problem(recorder: Recorder) -> None:
    recorder.then(answer(404, {"status": 404, "title": "Not Found", "detail": "no workflow"}))
    with client_for(recorder) as client, pytest.raises(ProblemError) as caught:
        next(iter(client.workflows.events("nope", follow=True)))
    assert caught.value.status == 404


async def test_async_list_all_follows_cursors(recorder: Recorder) -> None:
    summary = {"id": "a", "status": "failed"}
    recorder.then(
        answer(200, {"items": [summary, summary], "nextCursor": "c"}),
        answer(200, {"items": [summary], "nextCursor": None}),
    )
    async with async_client_for(recorder) as client:
        found = [s async for s in client.workflows.list_all(status="failed", limit=2)]
    assert len(found) == 3
    assert recorder.requests[1].url.params["cursor"] == "c"


def test_sync_list_all_follows_cursors(recorder: Recorder) -> None:
    recorder.then(
        answer(200, {"items": [{"id": "j1"}], "nextCursor": "c"}),
        answer(200, {"items": [{"id": "j2"}], "nextCursor": None}),
    )
    with client_for(recorder) as client:
        assert [job.id for job in client.jobs.list_all(queue="etl")] == ["j1", "j2"]


def test_the_public_api() -> None:
    """Pins what ``from baton import …`` offers."""
    assert set(baton.__all__) >= {
        "AsyncClient",
        "Client",
        "ProblemError",
        "Worker",
        "verify",
        "Retry",
        "Fatal",
        "Signer",
        "StepRequest",
        "StepFailed",
        "step_endpoint",
        "verify_request",
        "APIConnectionError",
        "APITimeoutError",
        "WaitTimeout",
        "BatonError",
    }
    for name in baton.__all__:
        assert getattr(baton, name) is not None
