"""Cancel, retry and step retry over real processes."""

from __future__ import annotations

import pytest
from contract import assert_problem, assert_status_document, steps_by_id, unique_id
from harness import BatonClient, HandlerClient
from helpers_failure import (
    CALLBACK_WAIT,
    WAIT,
    assert_never_called,
    compensation_statuses,
    ended,
    fixed,
    names,
    once,
    statuses,
    step,
    types,
    wait_step,
)


def cancel(api: BatonClient, workflow_id: str, body: object = None) -> dict:
    kwargs = {} if body is None else {"json": body}
    response = api.http.post(f"/v1/workflows/{workflow_id}/cancel", **kwargs)
    assert response.status_code == 200, response.text
    return response.json()


def retry(api: BatonClient, workflow_id: str) -> dict:
    response = api.http.post(f"/v1/workflows/{workflow_id}/retry")
    assert response.status_code == 200, response.text
    return response.json()


def retry_step(api: BatonClient, workflow_id: str, step_id: str) -> dict:
    response = api.http.post(f"/v1/workflows/{workflow_id}/steps/{step_id}/retry")
    assert response.status_code == 200, response.text
    return response.json()


# Cancel.


@pytest.mark.slow
def test_cancel_mid_run_lets_the_request_in_flight_finish_and_starts_nothing(
    api: BatonClient, handler: HandlerClient
) -> None:
    wid = unique_id("cancel")
    handler.script(slow=[{"delay": 2}], flaky=[{"status": 500}])
    api.create(
        {
            "id": wid,
            "onError": handler.hook_url("failed"),
            "onComplete": handler.hook_url("done"),
            "steps": [
                step(handler, "slow"),
                step(handler, "next", "slow"),
                step(handler, "flaky", retries=fixed(30, 3)),
            ],
        }
    )
    handler.wait_count(1, "flaky")
    handler.wait_for(lambda r: len(r) == 1, name="slow")
    wait_step(api, wid, "flaky", "retrying")

    answer = cancel(api, wid)

    assert answer["status"] == "cancelled"
    assert_status_document(answer)
    assert statuses(answer)["next"] == "cancelled"
    assert statuses(answer)["flaky"] == "cancelled"
    assert answer["error"]["code"] == "cancelled"
    handler.wait_for(ended, name="slow")
    document = wait_step(api, wid, "slow", "completed")
    assert document["status"] == "cancelled"
    assert steps_by_id(document)["slow"]["result"] == {"step": handler.name("slow"), "attempt": 1}
    assert_never_called(handler, "next")
    assert len(handler.requests("flaky")) == 1
    [hook] = handler.wait_for(lambda r: len(r) >= 1, CALLBACK_WAIT, name="failed")
    assert hook["headers"]["baton-kind"] == "on_error"
    assert hook["json"]["status"] == "cancelled"
    assert handler.requests("done") == []
    events = types(api.events(wid))
    assert "workflow.cancelled" in events
    assert "workflow.failed" not in events
    assert api.get(wid)["status"] == "cancelled"
    # The onError body carries the workflow's error, as the status document does.
    assert hook["json"]["error"] == api.get(wid)["error"]
    assert hook["json"]["error"]["code"] == "cancelled"


def test_cancel_of_a_finished_workflow_is_a_conflict(
    api: BatonClient, handler: HandlerClient
) -> None:
    wid = unique_id("cancel-done")
    api.create({"id": wid, "steps": [step(handler, "a")]})
    api.wait_status(wid, "completed", WAIT)

    assert_problem(api.http.post(f"/v1/workflows/{wid}/cancel"), 409)
    assert_problem(api.http.post(f"/v1/workflows/{wid}/cancel", json={"compensate": True}), 409)
    assert api.get(wid)["status"] == "completed"
    assert_problem(api.http.post("/v1/workflows/no-such-workflow/cancel"), 404)


def test_cancel_twice_is_a_conflict(api: BatonClient, handler: HandlerClient) -> None:
    wid = unique_id("cancel-twice")
    handler.script(a=[{"status": 500}])
    api.create({"id": wid, "steps": [step(handler, "a", retries=fixed(30, 3))]})
    wait_step(api, wid, "a", "retrying")

    assert cancel(api, wid, {"compensate": False})["status"] == "cancelled"
    assert_problem(api.http.post(f"/v1/workflows/{wid}/cancel"), 409)


def test_cancel_with_a_malformed_body_is_refused(api: BatonClient, handler: HandlerClient) -> None:
    wid = unique_id("cancel-422")
    handler.script(a=[{"status": 500}])
    api.create({"id": wid, "steps": [step(handler, "a", retries=fixed(30, 3))]})
    wait_step(api, wid, "a", "retrying")

    problem = assert_problem(
        api.http.post(f"/v1/workflows/{wid}/cancel", json={"compensate": "yes"}), 422
    )

    assert any("compensate" in e["path"] for e in problem["errors"]), problem
    assert api.get(wid)["status"] == "running"
    cancel(api, wid)


def test_cancel_with_compensation_undoes_completed_steps(
    api: BatonClient, handler: HandlerClient
) -> None:
    wid = unique_id("cancel-comp")
    handler.script(b=[{"status": 500}])
    api.create(
        {
            "id": wid,
            "onError": handler.hook_url("failed"),
            "steps": [
                step(handler, "a", compensation=handler.step_url("undo_a")),
                step(
                    handler,
                    "b",
                    "a",
                    compensation=handler.step_url("undo_b"),
                    retries=fixed(30, 3),
                ),
            ],
        }
    )
    wait_step(api, wid, "b", "retrying")

    answer = cancel(api, wid, {"compensate": True})

    assert answer["status"] == "compensating"
    document = api.wait_status(wid, "compensated", WAIT)
    assert statuses(document) == {"a": "completed", "b": "cancelled"}
    assert compensation_statuses(document) == {"a": "completed", "b": None}
    [undo] = handler.requests("undo_a")
    assert undo["headers"]["baton-kind"] == "compensation"
    assert undo["json"]["kind"] == "compensation"
    assert undo["json"]["compensating"] == {
        "stepId": "a",
        "result": {"step": handler.name("a"), "attempt": 1},
    }
    assert handler.requests("undo_b") == []
    assert document["error"]["code"] == "cancelled"
    [hook] = handler.wait_for(lambda r: len(r) >= 1, CALLBACK_WAIT, name="failed")
    assert hook["json"]["status"] == "compensated"
    assert hook["json"]["error"] == api.get(wid)["error"]


def test_cancel_with_compensation_and_nothing_to_undo_ends_cancelled(
    api: BatonClient, handler: HandlerClient
) -> None:
    wid = unique_id("cancel-nothing")
    handler.script(a=[{"status": 500}])
    api.create(
        {
            "id": wid,
            "steps": [
                step(handler, "a", compensation=handler.step_url("undo_a"), retries=fixed(30, 3)),
                step(handler, "b", "a", compensation=handler.step_url("undo_b")),
            ],
        }
    )
    wait_step(api, wid, "a", "retrying")

    answer = cancel(api, wid, {"compensate": True})

    assert answer["status"] == "cancelled"
    assert api.wait_status(wid, "cancelled", WAIT)["error"]["code"] == "cancelled"
    assert_never_called(handler, "undo_a", quiet=0.5)
    assert handler.requests("undo_b") == []


# Retry of a whole workflow.


def test_retry_resumes_a_failed_workflow_from_the_failure(
    api: BatonClient, handler: HandlerClient
) -> None:
    wid = unique_id("retry")
    handler.script(b=[{"status": 500}])
    api.create(
        {
            "id": wid,
            "failFast": True,
            "steps": [
                step(handler, "a"),
                step(handler, "b", "a", retries=fixed(0.1, 2)),
                step(handler, "c", "b"),
                step(handler, "other", "a"),
            ],
        }
    )
    failed = api.wait_status(wid, "failed", WAIT)
    assert statuses(failed)["b"] == "failed"
    assert statuses(failed)["c"] == "cancelled"
    handler.script(b=[{"status": 200}])

    answer = retry(api, wid)

    assert answer["status"] == "running"
    assert answer["error"] is None
    assert statuses(answer)["a"] == "completed"
    document = api.wait_status(wid, "completed", WAIT)
    assert set(statuses(document).values()) == {"completed"}
    assert len(handler.requests("a")) == 1
    first_run, second_run = handler.requests("b")[:2], handler.requests("b")[2:]
    assert len(first_run) == 2
    assert len(second_run) == 1
    assert first_run[0]["headers"]["webhook-id"] == first_run[1]["headers"]["webhook-id"]
    assert second_run[0]["headers"]["webhook-id"] != first_run[0]["headers"]["webhook-id"]
    # Attempts start over.
    assert second_run[0]["headers"]["baton-attempt"] == "1"
    item = steps_by_id(document)["b"]
    assert (item["attempts"], item["error"]) == (1, None)
    assert len(handler.requests("c")) == 1
    assert handler.requests("c")[0]["json"]["previousSteps"]["b"]["status"] == "completed"
    assert document["failedSteps"] == []
    assert document["error"] is None


def test_retry_is_a_conflict_unless_the_workflow_failed(
    api: BatonClient, handler: HandlerClient
) -> None:
    done = unique_id("retry-done")
    api.create({"id": done, "steps": [step(handler, "a")]})
    api.wait_status(done, "completed", WAIT)
    assert_problem(api.http.post(f"/v1/workflows/{done}/retry"), 409)

    running = unique_id("retry-running")
    handler.script(slow=[{"status": 500}])
    api.create({"id": running, "steps": [step(handler, "slow", retries=fixed(30, 3))]})
    wait_step(api, running, "slow", "retrying")
    assert_problem(api.http.post(f"/v1/workflows/{running}/retry"), 409)

    cancel(api, running)
    assert_problem(api.http.post(f"/v1/workflows/{running}/retry"), 409)
    assert api.get(running)["status"] == "cancelled"
    assert_problem(api.http.post("/v1/workflows/no-such-workflow/retry"), 404)


# Retry of one step.


def test_step_retry_reruns_the_step_and_its_dependents_only(
    api: BatonClient, handler: HandlerClient
) -> None:
    wid = unique_id("step-retry")
    handler.script(
        b=[
            {"json": {"success": True, "result": {"v": 1}}},
            {"json": {"success": True, "result": {"v": 2}}},
        ]
    )
    api.create(
        {
            "id": wid,
            "steps": [
                step(handler, "a"),
                step(handler, "b", "a"),
                step(handler, "c", "b"),
                step(handler, "d", "a"),
                step(handler, "x"),
            ],
        }
    )
    api.wait_status(wid, "completed", WAIT)
    first_ids = {r["name"]: r["headers"]["webhook-id"] for r in handler.requests()}

    answer = retry_step(api, wid, "b")

    assert answer["status"] == "running"
    document = api.wait_status(wid, "completed", WAIT)
    counts = {name: names(handler.requests()).count(name) for name in "abcdx"}
    assert counts == {"a": 1, "b": 2, "c": 2, "d": 1, "x": 1}
    again = {name: handler.requests(name)[-1] for name in ("b", "c")}
    for name, record in again.items():
        assert record["headers"]["webhook-id"] != first_ids[name]
        assert record["headers"]["baton-attempt"] == "1"
    # The dependent saw the new result.
    assert again["c"]["json"]["previousSteps"]["b"]["result"] == {"v": 2}
    assert again["b"]["received_mono"] <= again["c"]["received_mono"]
    assert steps_by_id(document)["b"]["result"] == {"v": 2}
    assert document["results"]["b"] == {"v": 2}


def test_step_retry_reopens_a_failed_workflow(api: BatonClient, handler: HandlerClient) -> None:
    wid = unique_id("step-retry-failed")
    handler.script(b=[{"status": 404}])
    api.create({"id": wid, "steps": [step(handler, "a"), step(handler, "b", "a", retries=once())]})
    api.wait_status(wid, "failed", WAIT)
    handler.script(b=[{"status": 200}])

    assert retry_step(api, wid, "b")["status"] == "running"

    document = api.wait_status(wid, "completed", WAIT)
    assert len(handler.requests("a")) == 1
    assert len(handler.requests("b")) == 2
    assert document["error"] is None


def test_step_retry_while_the_step_runs_is_a_conflict(
    api: BatonClient, handler: HandlerClient
) -> None:
    wid = unique_id("step-retry-409")
    handler.script(slow=[{"delay": 2}])
    api.create({"id": wid, "steps": [step(handler, "a"), step(handler, "slow", "a")]})
    handler.wait_for(lambda r: len(r) == 1, name="slow")

    assert_problem(api.http.post(f"/v1/workflows/{wid}/steps/slow/retry"), 409)
    assert_problem(api.http.post(f"/v1/workflows/{wid}/steps/nope/retry"), 404)

    api.wait_status(wid, "completed", WAIT)
    assert len(handler.requests("a")) == 1
    assert len(handler.requests("slow")) == 1
    assert_never_called(handler, "nope", quiet=0)


def test_step_retry_upstream_of_a_running_step_is_a_conflict(
    api: BatonClient, handler: HandlerClient
) -> None:
    wid = unique_id("step-retry-409-up")
    handler.script(slow=[{"delay": 2}])
    api.create({"id": wid, "steps": [step(handler, "a"), step(handler, "slow", "a")]})
    handler.wait_for(lambda r: len(r) == 1, name="slow")

    # "a" is done, but re-running it would re-run "slow", which is in flight.
    assert_problem(api.http.post(f"/v1/workflows/{wid}/steps/a/retry"), 409)

    api.wait_status(wid, "completed", WAIT)
    assert len(handler.requests("a")) == 1
    assert len(handler.requests("slow")) == 1


def test_step_retry_of_a_retrying_step_is_a_conflict(
    api: BatonClient, handler: HandlerClient
) -> None:
    wid = unique_id("step-retry-retrying")
    handler.script(a=[{"status": 500}])
    api.create({"id": wid, "steps": [step(handler, "a", retries=fixed(30, 3))]})
    wait_step(api, wid, "a", "retrying")

    assert_problem(api.http.post(f"/v1/workflows/{wid}/steps/a/retry"), 409)
    assert len(handler.requests("a")) == 1
    cancel(api, wid)
