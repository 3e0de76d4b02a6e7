"""Secrets hygiene in-process: a whole workflow with every logger at DEBUG leaks nothing.

The app runs on PostgreSQL with a password in its database URL and with an API key
and a signing secret it generates itself (so the "generated a new …" log lines are
exercised). Handlers are a small Starlette app served by uvicorn in a thread. While a
step succeeds, an async step heartbeats and calls back, a step fails and ``onError``
is called, the root logger and Tortoise's, asyncpg's, uvicorn's, httpx's and
aiohttp's loggers record at DEBUG, in the plain and the JSON format; standard error is
captured too. No line and no response body may contain a secret.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.errors import ConfigurationError
from app.logs import REDACTED
from app.main import CALLBACK_TOKEN_SECRET, create_app
from app.settings import Settings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette.testclient asks for httpx2
    from starlette.testclient import TestClient

pytestmark = pytest.mark.postgres

PASSWORD = "pg-hygiene-p@ss"
LOGGERS = (
    "",
    "tortoise",
    "tortoise.db_client",
    "asyncpg",
    "aiosqlite",
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "httpx",
    "httpcore",
    "aiohttp",
    "baton",
)
WAIT = 30.0


class Capture(logging.Handler):
    """Every record of every logger, formatted, in memory."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def capture() -> Iterator[Capture]:
    handler = Capture()
    saved = {name: logging.getLogger(name).level for name in LOGGERS}
    for name in LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)  # "baton" does not propagate: it gets its own
    try:
        yield handler
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)
            logging.getLogger(name).removeHandler(handler)


class Handlers:
    """Step and hook endpoints on a real port; records every request."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        app = Starlette(routes=[Route("/{name}", self.receive, methods=["POST"])])
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def receive(self, request: Request) -> JSONResponse:
        name = request.path_params["name"]
        body = await request.json()
        self.requests.append(
            {"name": name, "headers": dict(request.headers), "body": body, "raw": str(body)}
        )
        if name == "slow":
            return JSONResponse({"async": True}, status_code=202)
        if name == "boom":
            return JSONResponse({"success": False, "error": "card declined", "retry": False})
        return JSONResponse({"success": True, "result": {"step": name}})

    def named(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["name"] == name]

    def __enter__(self) -> Handlers:
        self.thread.start()
        deadline = time.monotonic() + WAIT
        while not self.server.started:
            assert time.monotonic() < deadline, "the handler server did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self.thread.join(WAIT)


def with_password(url: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    netloc = f"{parts.username or 'postgres'}:{quote(PASSWORD, safe='')}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def wait_until(condition: Any, message: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


def run_workflow(client: TestClient, handlers: Handlers, key: str) -> None:
    auth = {"Authorization": f"Bearer {key}"}
    body = {
        "id": "hygiene",
        "steps": [
            {"id": "quick", "url": f"{handlers.url}/quick"},
            {"id": "slow", "url": f"{handlers.url}/slow", "dependsOn": ["quick"]},
            {"id": "boom", "url": f"{handlers.url}/boom", "dependsOn": ["slow"]},
        ],
        "onError": f"{handlers.url}/failed",
    }
    assert client.post("/v1/workflows", json=body, headers=auth).status_code == 201
    assert client.post("/v1/workflows", json={"steps": 1}, headers=auth).status_code == 422
    assert client.get("/v1/workflows", headers={"Authorization": f"Bearer {key}x"}).status_code
    wait_until(lambda: handlers.named("slow"), "the async step was not called")
    callback = urlsplit(handlers.named("slow")[0]["body"]["callbackUrl"]).path
    wait_until(
        lambda: client.post(f"{callback}/heartbeat").status_code == 200, "no heartbeat accepted"
    )
    assert client.post(callback, json={"success": True, "result": {"slow": 1}}).status_code == 200
    assert client.post(callback, json={"success": True}).status_code == 410
    assert client.post(callback[:-3] + "xyz", json={"success": True}).status_code == 403
    wait_until(lambda: handlers.named("failed"), "onError was not called")
    for path in ("", "/steps/boom", "/steps/slow", "/events"):
        assert client.get(f"/v1/workflows/hygiene{path}", headers=auth).status_code == 200
    for path in ("/readyz", "/metrics"):
        assert client.get(path).status_code == 200


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_whole_workflow_logs_and_answers_no_secret(
    tmp_path: Path,
    pg_url: str,
    capture: Capture,
    capfd: pytest.CaptureFixture[str],
    log_format: str,
) -> None:
    database_url = with_password(pg_url)
    settings = Settings(
        database_url=database_url,
        data_dir=tmp_path,
        allow_private_networks=True,
        log_level="debug",
        log_format=log_format,
    )
    bodies: list[str] = []

    def record(response: httpx.Response) -> None:
        response.read()
        bodies.append(response.text)
        bodies.extend(f"{k}: {v}" for k, v in response.headers.items())

    with Handlers() as handlers:
        client = TestClient(create_app(settings), raise_server_exceptions=False)
        client.event_hooks = {"request": [], "response": [record]}
        with client:
            key = (tmp_path / "api-key").read_text().strip()
            run_workflow(client, handlers, key)
            store = client.app.state.runtime.store  # type: ignore[attr-defined]
            token_key = client.portal.call(store.server_secret, CALLBACK_TOKEN_SECRET)

    signing_secret = (tmp_path / "signing-secret").read_text().strip()
    encoded = signing_secret.removeprefix("whsec_")
    secrets = {
        "API key": key,
        "signing secret": signing_secret,
        "its base64 part": encoded.rstrip("="),
        "callback-token key": token_key,
        "database password": PASSWORD,
        "database password (written)": quote(PASSWORD, safe=""),
    }
    stderr = capfd.readouterr().err
    logged = "\n".join(capture.lines)
    # The capture did hear the libraries and Baton, and redaction did happen.
    for marker in ("tortoise.db_client", "baton.keys", "generated a new API key", "httpx"):
        assert marker in logged, marker
    assert REDACTED in logged
    assert "/v1/callbacks/<redacted>" in logged
    handler_saw = "\n".join(str(r) for r in handlers.requests)
    for name, value in secrets.items():
        assert value not in logged, f"{name} in a log line"
        assert value not in stderr, f"{name} on standard error"
        assert value not in "\n".join(bodies), f"{name} in a response"
        assert value not in handler_saw, f"{name} in a request to a handler"


def test_a_start_up_error_shows_no_password(tmp_path: Path, capture: Capture) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    url = f"postgres://baton:{quote(PASSWORD, safe='')}@127.0.0.1:{port}/baton"
    settings = Settings(database_url=url, data_dir=tmp_path, log_level="debug")
    client = TestClient(create_app(settings))
    with pytest.raises(ConfigurationError) as raised, contextlib.ExitStack() as stack:
        stack.enter_context(client)
    assert "postgres://baton:***@127.0.0.1" in str(raised.value)
    logged = "\n".join(capture.lines)
    assert "Tortoise-ORM startup" in logged
    for value in (PASSWORD, quote(PASSWORD, safe="")):
        assert value not in str(raised.value)
        assert value not in logged


def test_test_modules_have_unique_names() -> None:
    """pytest imports test modules by their basename (rootdir-relative packages aside):
    two test files of one name in different folders break collection of the whole suite."""
    root = Path(__file__).resolve().parents[2]
    names: dict[str, list[str]] = {}
    for folder in ("tests", "clients/python/tests"):
        for path in (root / folder).rglob("test_*.py"):
            names.setdefault(path.name, []).append(str(path.relative_to(root)))
    assert {n: p for n, p in names.items() if len(p) > 1} == {}
