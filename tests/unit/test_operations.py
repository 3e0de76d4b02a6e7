"""Operations: /metrics, JSON logs, and the settings that drive them."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import orjson
import pytest
from starlette.datastructures import Secret

from app.errors import ConfigurationError
from app.logs import JsonFormatter, configure_logging
from app.main import create_app
from app.settings import Settings
from baton.signing import generate_secret

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette.testclient asks for httpx2
    from starlette.testclient import TestClient


def test_metrics_endpoint_exposes_counts_and_histograms(tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite://{tmp_path}/db.sqlite3",
        data_dir=tmp_path,
        api_keys=(Secret("k"),),
        signing_secrets=(Secret(generate_secret()),),
    )
    with TestClient(create_app(settings)) as client:
        body = {"steps": [{"id": "a", "url": "https://handler.example/a"}]}
        created = client.post("/v1/workflows", json=body, headers={"Authorization": "Bearer k"})
        assert created.status_code == 201
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'baton_workflows{status="running"} 1.0' in text
    assert 'baton_workflows{status="completed"} 0.0' in text
    assert "baton_deliveries_in_flight" in text
    assert "baton_scheduling_delay_seconds_bucket" in text
    assert "baton_delivery_duration_seconds" in text
    assert "baton_lease_takeovers_total" in text
    assert 'baton_events_total{type="step.completed"}' in text
    # The create's own events are counted, like every other type of DESIGN §6.
    assert 'baton_events_total{type="workflow.created"} 1.0' in text
    assert 'baton_events_total{type="workflow.started"} 1.0' in text
    exported = {
        line.split('"')[1] for line in text.splitlines() if line.startswith("baton_events_total{")
    }
    assert exported == DESIGN_EVENT_TYPES


#: DESIGN §6, word for word.
DESIGN_EVENT_TYPES = {
    "workflow.created",
    "workflow.started",
    "step.started",
    "step.completed",
    "step.failed",
    "step.retrying",
    "step.skipped",
    "step.cancelled",
    "workflow.completed",
    "workflow.failed",
    "workflow.cancelled",
    "workflow.compensating",
    "compensation.completed",
    "compensation.failed",
    "workflow.compensated",
    "workflow.compensation_failed",
    "callback.delivered",
    "callback.failed",
}


def test_json_log_lines_carry_workflow_and_step_ids() -> None:
    record = logging.LogRecord("baton.events", logging.INFO, __file__, 1, "%s", ("hi",), None)
    record.workflow_id = "wf_1"
    record.step_id = "charge"
    record.event = "step.failed"
    line = orjson.loads(JsonFormatter().format(record))
    assert line["message"] == "hi"
    assert line["level"] == "info"
    assert line["workflowId"] == "wf_1"
    assert line["stepId"] == "charge"
    assert line["event"] == "step.failed"
    assert line["time"].endswith("+00:00")


def test_json_logging_covers_uvicorn_too() -> None:
    configure_logging("info", "json")
    try:
        handler = logging.getLogger("uvicorn.access").handlers[0]
        assert isinstance(handler.formatter, JsonFormatter)
    finally:
        configure_logging("info", "text")
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
            logging.getLogger(name).handlers = []
            logging.getLogger(name).propagate = True


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"BATON_LOG_FORMAT": "xml"}, "BATON_LOG_FORMAT"),
        ({"BATON_RETENTION_DAYS": "0"}, "BATON_RETENTION_DAYS"),
        ({"BATON_RETENTION_DAYS": "soon"}, "invalid configuration"),
        ({"BATON_MAX_CONCURRENCY": "0"}, "BATON_MAX_CONCURRENCY"),
        ({"BATON_PUBLIC_URL": "ftp://x"}, "BATON_PUBLIC_URL"),
    ],
)
def test_bad_settings_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Settings.from_env(env, env_file=None)


def test_settings_from_env() -> None:
    settings = Settings.from_env(
        {
            "BATON_DATA_DIR": "/srv/baton",
            "BATON_RETENTION_DAYS": "7",
            "BATON_LOG_FORMAT": "JSON",
            "BATON_SIGNING_SECRETS": "whsec_a,whsec_b",
        },
        env_file=None,
    )
    assert settings.database_url == "sqlite:///srv/baton/baton.sqlite3"
    assert settings.retention_days == 7.0
    assert settings.log_format == "json"
    assert len(settings.signing_secrets) == 2
    assert "whsec_a" not in repr(settings)
