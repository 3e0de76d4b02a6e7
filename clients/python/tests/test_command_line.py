"""The ``baton`` command line, in process, against a recording mock transport.

Each command is run with ``--json`` (its output parsed) and without (its human output
read), and the request it sent is checked. The workflow commands also run as a real
``baton`` process against a real server in tests/e2e/test_python_client.py.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes import (
    Recorder,
    answer,
    claimed_doc,
    event_doc,
    job_doc,
    queue_doc,
    schedule_doc,
    sse,
    workflow_doc,
)

from baton.cli import (
    EXIT_NOT_COMPLETED,
    EXIT_OK,
    EXIT_PROBLEM,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    main,
)

BASE = ["--url", "http://baton.test", "--api-key", "bk_cli"]


def run(recorder: Recorder, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main([*BASE, *argv], transport=httpx.MockTransport(recorder))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def workflow_file(tmp_path: Path) -> Path:
    path = tmp_path / "workflow.json"
    path.write_text(json.dumps({"id": "order-1", "steps": [{"id": "a", "url": "https://x.io"}]}))
    return path


@pytest.fixture
def schedule_file(tmp_path: Path) -> Path:
    path = tmp_path / "schedule.json"
    path.write_text(json.dumps({"cron": "0 3 * * *", "workflow": {"steps": []}}))
    return path


# (argv, answer, method, path, body, text in the human output)
CASES: list[tuple[list[str], httpx.Response, str, str, Any, str]] = [
    (["workflows", "get", "order-1"], answer(200, workflow_doc()), "GET",
     "/v1/workflows/order-1", None, "validate"),
    (["workflows", "list", "--status", "failed", "--limit", "5"],
     answer(200, {"items": [{"id": "order-1", "status": "failed", "stepCount": 2}],
                  "nextCursor": "c2"}),
     "GET", "/v1/workflows", None, "--cursor c2"),
    (["workflows", "cancel", "order-1", "--compensate"],
     answer(200, workflow_doc(status="compensating")), "POST", "/v1/workflows/order-1/cancel",
     {"compensate": True}, "compensating"),
    (["workflows", "retry", "order-1"], answer(200, workflow_doc()), "POST",
     "/v1/workflows/order-1/retry", None, "running"),
    (["workflows", "retry", "order-1", "--step", "validate"], answer(200, workflow_doc()),
     "POST", "/v1/workflows/order-1/steps/validate/retry", None, "running"),
    (["jobs", "enqueue", "etl", "--payload", '{"n": 1}', "--priority", "5"],
     answer(201, job_doc()), "POST", "/v1/jobs",
     {"queue": "etl", "payload": {"n": 1}, "priority": 5}, "job_1"),
    (["jobs", "get", "job_1"], answer(200, claimed_doc()), "GET", "/v1/jobs/job_1", None,
     "claimed"),
    (["jobs", "list", "--queue", "etl", "--status", "dlq"],
     answer(200, {"items": [job_doc(status="dlq")], "nextCursor": None}), "GET", "/v1/jobs",
     None, "dlq"),
    (["jobs", "retry", "job_1"], answer(200, job_doc()), "POST", "/v1/jobs/job_1/retry", None,
     "pending"),
    (["queues", "list"], answer(200, {"items": [queue_doc(), queue_doc("mail", True)]}),
     "GET", "/v1/queues", None, "mail"),
    (["queues", "pause", "etl"], answer(200, queue_doc(paused=True)), "POST",
     "/v1/queues/etl/pause", None, "queue etl: paused"),
    (["queues", "resume", "etl"], answer(200, queue_doc()), "POST", "/v1/queues/etl/resume",
     None, "queue etl: active"),
    (["dlq", "replay", "etl", "--limit", "50"], answer(200, {"replayed": 4}), "POST",
     "/v1/queues/etl/dlq/replay", {"limit": 50}, "replayed 4 job(s)"),
    (["schedules", "list"], answer(200, {"items": [schedule_doc()]}), "GET", "/v1/schedules",
     None, "0 3 * * *"),
    (["schedules", "pause", "nightly"], answer(200, schedule_doc(paused=True)), "POST",
     "/v1/schedules/nightly/pause", None, "schedule nightly: paused"),
    (["schedules", "resume", "nightly"], answer(200, schedule_doc()), "POST",
     "/v1/schedules/nightly/resume", None, "schedule nightly: active"),
    (["schedules", "trigger", "nightly"], answer(200, workflow_doc("nightly-1")), "POST",
     "/v1/schedules/nightly/trigger", None, "fired: workflow nightly-1"),
]  # fmt: skip


def _copy(response: httpx.Response) -> httpx.Response:
    return httpx.Response(response.status_code, headers=response.headers, content=response.read())


@pytest.mark.parametrize(
    "case", CASES, ids=[" ".join(case[0][:2]) + f"-{i}" for i, case in enumerate(CASES)]
)
@pytest.mark.parametrize("as_json", [True, False], ids=["json", "human"])
def test_command(
    case: tuple[list[str], httpx.Response, str, str, Any, str],
    as_json: bool,
    recorder: Recorder,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv, response, method, path, body, text = case
    recorder.then(_copy(response))
    code, out, err = run(recorder, capsys, *argv, *(["--json"] if as_json else []))
    assert (code, err) == (EXIT_OK, "")
    [request] = recorder.requests
    assert (request.method, request.url.path) == (method, path)
    assert request.headers["authorization"] == "Bearer bk_cli"
    if body is not None:
        assert json.loads(request.content) == body
    if as_json:
        assert json.loads(out) == json.loads(_copy(response).content) or "replayed" in out
    else:
        assert text in out


def test_create_from_a_file_and_from_stdin(
    recorder: Recorder,
    capsys: pytest.CaptureFixture[str],
    workflow_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorder.default = answer(201, workflow_doc())
    code, out, _ = run(recorder, capsys, "workflows", "create", str(workflow_file), "--json")
    assert code == EXIT_OK and json.loads(out)["id"] == "order-1"
    assert json.loads(recorder.last.content) == json.loads(workflow_file.read_text())
    monkeypatch.setattr("sys.stdin", io.StringIO(workflow_file.read_text()))
    code, out, _ = run(recorder, capsys, "workflows", "create", "-")
    assert code == EXIT_OK and "order-1" in out


def test_schedules_put(
    recorder: Recorder, capsys: pytest.CaptureFixture[str], schedule_file: Path
) -> None:
    recorder.then(answer(201, schedule_doc()))
    code, out, _ = run(
        recorder, capsys, "--json", "schedules", "put", "nightly", str(schedule_file)
    )
    assert code == EXIT_OK and json.loads(out)["id"] == "nightly"
    assert recorder.last.method == "PUT" and recorder.last.url.path == "/v1/schedules/nightly"


def test_events_print_one_document_per_line(
    recorder: Recorder, capsys: pytest.CaptureFixture[str]
) -> None:
    recorder.then(answer(200, {"items": [event_doc(1), event_doc(2)], "nextAfter": None}))
    code, out, _ = run(recorder, capsys, "workflows", "events", "order-1", "--json")
    assert code == EXIT_OK
    assert [json.loads(line)["id"] for line in out.splitlines()] == [1, 2]


def test_events_follow(recorder: Recorder, capsys: pytest.CaptureFixture[str]) -> None:
    recorder.then(
        httpx.Response(
            200,
            headers={"content-type": "text/event-stream"},
            content=sse([event_doc(7, "workflow.completed")]),
        ),
        answer(200, workflow_doc(status="completed")),
    )
    code, out, _ = run(recorder, capsys, "workflows", "events", "order-1", "-f", "--after", "6")
    assert code == EXIT_OK and "workflow.completed" in out
    assert recorder.requests[0].headers["last-event-id"] == "6"


@pytest.mark.parametrize(
    ("final", "expected"),
    [("completed", EXIT_OK), ("failed", EXIT_NOT_COMPLETED), ("compensated", EXIT_NOT_COMPLETED)],
)
@pytest.mark.parametrize("as_json", [True, False], ids=["json", "human"])
def test_watch_exits_by_outcome(
    recorder: Recorder,
    capsys: pytest.CaptureFixture[str],
    final: str,
    expected: int,
    as_json: bool,
) -> None:
    recorder.then(answer(200, workflow_doc()))
    recorder.then(
        httpx.Response(
            200,
            headers={"content-type": "text/event-stream"},
            content=sse([event_doc(1), event_doc(2, f"workflow.{final}")]),
        )
    )
    recorder.default = answer(200, workflow_doc(status=final))
    code, out, err = run(
        recorder, capsys, "workflows", "watch", "order-1", *(["--json"] if as_json else [])
    )
    assert (code, err) == (expected, "")
    if as_json:
        lines = [json.loads(line) for line in out.splitlines()]
        assert [line.get("type") for line in lines[:2]] == ["step.started", f"workflow.{final}"]
        assert lines[-1]["status"] == final
    else:
        assert final in out and "validate" in out


def test_watch_of_a_finished_workflow_draws_it_once(
    recorder: Recorder, capsys: pytest.CaptureFixture[str]
) -> None:
    recorder.then(answer(200, workflow_doc(status="completed")))
    code, out, _ = run(recorder, capsys, "workflows", "watch", "order-1")
    assert code == EXIT_OK and "completed" in out
    assert len(recorder.requests) == 1


def test_a_problem_is_one_line_and_exit_3(
    recorder: Recorder, capsys: pytest.CaptureFixture[str]
) -> None:
    recorder.then(
        answer(
            404,
            {
                "type": "https://baton.dev/problems/not-found",
                "title": "Not Found",
                "status": 404,
                "detail": "no workflow 'nope'",
                "errors": [],
            },
        )
    )
    code, out, err = run(recorder, capsys, "workflows", "get", "nope")
    assert (code, out) == (EXIT_PROBLEM, "")
    assert err == "baton: 404 Not Found: no workflow 'nope'\n"


def test_validation_errors_stay_on_one_line(
    recorder: Recorder, capsys: pytest.CaptureFixture[str], workflow_file: Path
) -> None:
    recorder.then(
        answer(
            422,
            {
                "status": 422,
                "title": "Unprocessable Content",
                "detail": "The request has 2 problems.",
                "errors": [
                    {"path": "steps[0].url", "message": "not http(s)"},
                    {"path": "steps", "message": "cycle:\na -> a"},
                ],
            },
        )
    )
    code, _, err = run(recorder, capsys, "workflows", "create", str(workflow_file))
    assert code == EXIT_PROBLEM
    assert err.count("\n") == 1
    assert "steps[0].url: not http(s); steps: cycle: a -> a" in err


def test_an_unreachable_server_is_exit_4(
    recorder: Recorder, capsys: pytest.CaptureFixture[str]
) -> None:
    recorder.default = httpx.ConnectError("refused")
    code, _, err = run(recorder, capsys, "queues", "list")
    assert code == EXIT_UNREACHABLE
    assert err.startswith("baton: cannot reach the server:") and err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["workflows", "create", "/no/such/file.json"], "cannot read workflow file"),
        (["jobs", "enqueue", "etl", "--payload", "{oops"], "--payload is not JSON"),
        (["jobs", "enqueue", "etl", "--payload", "@/no/file"], "cannot read payload file"),
    ],
)
def test_bad_input_is_exit_2(
    recorder: Recorder, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, _, err = run(recorder, capsys, *argv)
    assert code == EXIT_USAGE and message in err and err.count("\n") == 1
    assert recorder.requests == []


def test_not_json_file_is_exit_2(
    recorder: Recorder, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "w.json"
    path.write_text("steps: []")
    code, _, err = run(recorder, capsys, "workflows", "create", str(path))
    assert code == EXIT_USAGE and "is not JSON" in err


def test_usage_errors_are_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["workflows", "frobnicate"])
    assert caught.value.code == EXIT_USAGE
    assert capsys.readouterr().err.startswith("baton: argument COMMAND: invalid choice")


def test_environment_and_flags(
    recorder: Recorder, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATON_URL", "http://from-env.test")
    monkeypatch.setenv("BATON_API_KEY", "bk_env")
    recorder.default = answer(200, {"items": []})
    main(["queues", "list"], transport=httpx.MockTransport(recorder))
    assert str(recorder.last.url) == "http://from-env.test/v1/queues"
    assert recorder.last.headers["authorization"] == "Bearer bk_env"
    main(
        ["queues", "list", "--url", "http://flag.test", "--api-key", "bk_flag"],
        transport=httpx.MockTransport(recorder),
    )
    assert str(recorder.last.url) == "http://flag.test/v1/queues"
    assert recorder.last.headers["authorization"] == "Bearer bk_flag"
    capsys.readouterr()
