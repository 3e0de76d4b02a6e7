"""Secrets never leak: not into any log line, at any level, in either format, nor any answer.

A real Baton server on PostgreSQL, with a password in ``BATON_DATABASE_URL``, two
signing secrets and an API key, runs a whole workflow: a step that succeeds, an async
step that heartbeats and calls back, a step that fails after a retry, and ``onError``;
then its callback token is reused, forged, and wrong API keys are tried. The root
logger and every library's logger (Tortoise, asyncpg, aiosqlite, httpx, httpcore,
aiohttp, uvicorn at trace level) write at DEBUG into the server's log, in the plain
and the JSON format. Neither that log, nor any body Baton answered or sent, may
contain the API key, a signing secret (whole or its base64 part), the callback-token
key, the database password, or a callback token.

Servers that refuse to start (a bad secret, a bad or unreachable database URL, a bad
setting next to good secrets) must not print them either.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
from contract import assert_problem, unique_id
from harness import (
    POSTGRES_ENV,
    BatonServer,
    HandlerClient,
    free_port,
    postgres_database,
    random_api_key,
    random_signing_secret,
)
from helpers_failure import (
    ASYNC_ANSWER,
    CALLBACK_WAIT,
    WAIT,
    callback_url,
    fixed,
    followed_up,
    heartbeat,
    once,
    post_callback,
    step,
    tampered,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

LOCAL_POSTGRES = "postgres://postgres@127.0.0.1:5432/postgres"
#: Every logger worth hearing from, at DEBUG, into the process's standard error.
LIBRARY_LOGGERS = (
    "tortoise",
    "tortoise.db_client",
    "asyncpg",
    "aiosqlite",
    "httpx",
    "httpcore",
    "aiohttp",
    "asyncio",
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "uvicorn.asgi",
    "baton",
)


def log_config(path: Path) -> Path:
    """A ``uvicorn --log-config`` file: the root logger and every library's at DEBUG."""
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "plain",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": "DEBUG", "handlers": ["stderr"]},
        "loggers": {name: {"level": "DEBUG", "propagate": True} for name in LIBRARY_LOGGERS},
    }
    path.write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def postgres_admin_url() -> str:
    url = os.environ.get(POSTGRES_ENV) or LOCAL_POSTGRES
    try:
        with postgres_database(url):
            pass
    except Exception as exc:
        pytest.fail(f"PostgreSQL is not answering at {url} ({exc}); start it (see README)")
    return url


def with_password(url: str, password: str) -> str:
    """``url`` with ``password`` (percent-encoded) as its password, unless it has one.

    The local test server trusts loopback connections, so a made-up password is sent
    and ignored; a server that checks passwords brings its own in the admin URL.
    """
    parts = urlsplit(url)
    if parts.password:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    user = parts.username or "postgres"
    netloc = f"{user}:{quote(password, safe='')}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def database_password(url: str) -> str:
    password = urlsplit(url).password
    assert password, url
    return password


def new_password() -> str:
    # A character that must be percent-encoded, so both spellings are looked for.
    return f"Pg{secrets.token_hex(12)}@pw"


def signing_secret_forms(secret: str) -> list[str]:
    """A ``whsec_`` secret, its base64 part, and that part without padding."""
    encoded = secret.removeprefix("whsec_")
    assert base64.b64decode(encoded)
    return [secret, encoded, encoded.rstrip("=")]


def password_forms(password: str) -> list[str]:
    return [password, quote(password, safe=""), password.split("@")[0]]


def find_secrets(text: str, named: dict[str, Iterable[str]]) -> list[str]:
    """Which of the named secrets (any of its forms) appear in ``text``."""
    found = []
    for name, forms in named.items():
        for form in forms:
            assert len(form) >= 8, f"{name} is too short to search for"
            if form in text:
                found.append(f"{name} ({form[:4]}…)")
    return found


def leaked_lines(text: str, named: dict[str, Iterable[str]]) -> list[str]:
    lines = [line for line in text.splitlines() if find_secrets(line, named)]
    return [line[:300] for line in lines[:10]]


class Answers:
    """Every body Baton answered the test, collected through an httpx response hook."""

    def __init__(self) -> None:
        self.bodies: list[str] = []

    def hook(self, response: httpx.Response) -> None:
        response.read()
        self.bodies.append(f"{response.request.method} {response.url.path} {response.status_code}")
        self.bodies.append(response.text)
        self.bodies.extend(f"{k}: {v}" for k, v in response.headers.items())

    def client(self, base_url: str, **kwargs: Any) -> httpx.Client:
        return httpx.Client(
            base_url=base_url,
            timeout=30.0,
            trust_env=False,
            event_hooks={"response": [self.hook]},
            **kwargs,
        )


def fetch_token_key(database_url: str) -> str:
    async def fetch() -> str:
        dsn = database_url.replace("postgres://", "postgresql://", 1)
        connection = await asyncpg.connect(dsn)
        try:
            value = await connection.fetchval(
                "SELECT value FROM server_secrets WHERE name = 'callback-token'"
            )
        finally:
            await connection.close()
        assert isinstance(value, str) and value
        return value

    return asyncio.run(fetch())


@pytest.fixture
def answers() -> Answers:
    return Answers()


@pytest.fixture
def database(postgres_admin_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database whose URL carries a password."""
    with postgres_database(postgres_admin_url) as url:
        yield with_password(url, new_password())


def run_workflow(
    server: BatonServer, handler: HandlerClient, answers: Answers
) -> tuple[list[str], list[str]]:
    """Run the whole workflow through ``server``; the callback URLs and what handlers saw."""
    wid = unique_id("secrets")
    handler.script(
        slow=[
            ASYNC_ANSWER
            | {
                "then": [
                    {"delay": 0.2, "path": "/heartbeat"},
                    {"delay": 0.2, "json": {"success": True, "result": {"slow": "done"}}},
                ]
            }
        ],
        boom=[
            {"status": 503, "body": "try later"},
            {"json": {"success": False, "error": "card declined", "retry": False}},
        ],
    )
    body = {
        "id": wid,
        "steps": [
            step(handler, "quick", retries=once()),
            step(handler, "slow", "quick", retries=once(), timeout=30),
            step(handler, "boom", "slow", retries=fixed(0.1, 2)),
        ],
        "context": {"orderId": "order-1"},
        "onError": handler.hook_url("failed"),
        "timeout": 3600,
    }
    auth = {"Authorization": f"Bearer {server.api_key}"}
    with answers.client(server.url, headers=auth) as api:
        assert api.post("/v1/workflows", json=body).status_code == 201
        assert api.post("/v1/workflows", json={"steps": []}).status_code == 422
        assert api.post("/v1/workflows", json=body | {"name": "other"}).status_code == 409
        deadline = time.monotonic() + CALLBACK_WAIT
        while (document := api.get(f"/v1/workflows/{wid}").json())["status"] != "failed":
            assert time.monotonic() < deadline, document
            time.sleep(0.1)
        handler.wait_for(lambda records: len(records) >= 1, CALLBACK_WAIT, name="failed")
        [slow] = handler.wait_for(followed_up, WAIT, name="slow")
        assert [f["status"] for f in slow["followups"]] == [200, 200], slow["followups"]
        for path in ("", "/steps/slow", "/steps/boom", "/steps/boom/dependencies", "/events"):
            assert api.get(f"/v1/workflows/{wid}{path}").status_code == 200
        stream = api.get(f"/v1/workflows/{wid}/events", headers={"Accept": "text/event-stream"})
        assert stream.status_code == 200
        assert api.get("/v1/workflows").status_code == 200
        for path in ("/readyz", "/healthz", "/metrics"):
            assert api.get(path).status_code == 200
        assert api.post(f"/v1/workflows/{wid}/cancel").status_code == 409
        assert api.post(f"/v1/workflows/{wid}/retry").status_code == 200

    url = callback_url(slow)
    with answers.client(server.url) as anonymous:
        path = urlsplit(url).path
        assert_problem(anonymous.post(path, json={"success": True}), 410)
        assert_problem(anonymous.post(f"{path}/heartbeat"), 410)
        assert_problem(anonymous.post(urlsplit(tampered(url)).path, json={"success": True}), 403)
        # Wrong keys, one of them another secret: the 401 says nothing about any.
        for wrong in (f"{server.api_key}x", server.signing_secret, "bk_nope"):
            response = anonymous.get("/v1/workflows", headers={"Authorization": f"Bearer {wrong}"})
            assert_problem(response, 401)
    for response in (post_callback(url, {"success": True}), heartbeat(url)):
        answers.hook(response)

    seen = []
    urls = []
    for record in handler.requests():
        seen.append(json.dumps(record))
        if isinstance(record["json"], dict) and record["json"].get("callbackUrl"):
            urls.append(record["json"]["callbackUrl"])
    return urls, seen


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_secret_reaches_a_log_or_an_answer_while_a_workflow_runs(
    tmp_path: Path,
    handler: HandlerClient,
    signing_secret: str,
    database: str,
    answers: Answers,
    log_format: str,
) -> None:
    rotated = random_signing_secret()
    server = BatonServer(
        tmp_path / "baton",
        database_url=database,
        signing_secret=f"{rotated},{signing_secret}",
        extra_env={"BATON_LOG_LEVEL": "debug", "BATON_LOG_FORMAT": log_format},
        extra_args=["--log-config", str(log_config(tmp_path / "log.json")), "--log-level", "trace"],
    )
    server.start()
    try:
        callback_urls, handler_saw = run_workflow(server, handler, answers)
        token_key = fetch_token_key(database)
    finally:
        server.stop()
    # A second start on the same database reads the token key back rather than making it.
    server.start()
    server.stop()

    log = server.log_path.read_text(encoding="utf-8", errors="replace")
    # The log did capture what it should: library debug lines, access lines, Baton's own.
    for marker in ("tortoise.db_client", "uvicorn.access", "httpx", "baton.events"):
        assert marker in log, f"no {marker} line in the log; is the log config applied?"
    assert "SELECT" in log and "server_secrets" in log
    if log_format == "json":
        assert '"logger":"baton' in log
    tokens = [u.rsplit("/", 1)[-1] for u in callback_urls]
    assert len(tokens) >= 2, callback_urls
    named: dict[str, Iterable[str]] = {
        "API key": [server.api_key],
        "signing secret": signing_secret_forms(rotated),
        "second signing secret": signing_secret_forms(signing_secret),
        "callback-token key": [token_key],
        "database password": password_forms(database_password(database)),
    }
    assert leaked_lines(log, {**named, "callback token": tokens}) == []
    assert find_secrets("\n".join(answers.bodies), named) == []
    # What handlers receive carries its own callback token, and nothing else secret.
    assert find_secrets("\n".join(handler_saw), named) == []


def refusing_server(tmp_path: Path, env: dict[str, str], signing_secret: str) -> BatonServer:
    return BatonServer(
        tmp_path / "baton",
        api_key=random_api_key(),
        signing_secret=signing_secret,
        extra_env={"BATON_LOG_LEVEL": "debug", **env},
        extra_args=["--log-config", str(log_config(tmp_path / "log.json")), "--log-level", "trace"],
    )


BAD_CONFIGS = {
    "malformed signing secret": (
        {"BATON_SIGNING_SECRETS": "{good},whsec_{secret}*not*base64"},
        "signing secret #2",
    ),
    "unknown database scheme": (
        {"BATON_DATABASE_URL": "mysql://baton:{password}@127.0.0.1:3306/baton"},
        "BATON_DATABASE_URL",
    ),
    "database port not a number": (
        {"BATON_DATABASE_URL": "postgres://baton:{password}@127.0.0.1:notaport/baton"},
        "port",
    ),
    "database unreachable": (
        {"BATON_DATABASE_URL": "postgres://baton:{password}@127.0.0.1:{port}/baton"},
        "postgres://baton:***@127.0.0.1",
    ),
    "bad setting beside good secrets": (
        {
            "BATON_DATABASE_URL": "postgres://baton:{password}@127.0.0.1:{port}/baton",
            "BATON_LOG_LEVEL": "loud",
        },
        "BATON_LOG_LEVEL",
    ),
    "bad JSON setting beside good secrets": (
        {
            "BATON_DATABASE_URL": "postgres://baton:{password}@127.0.0.1:{port}/baton",
            "BATON_LOG_FORMAT": "json",
            "BATON_MAX_CONCURRENCY": "many",
        },
        "BATON_MAX_CONCURRENCY",
    ),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_a_server_that_refuses_to_start_prints_no_secret(tmp_path: Path, case: str) -> None:
    template, expected = BAD_CONFIGS[case]
    password = new_password()
    bad_secret = secrets.token_hex(16)
    good = random_signing_secret()
    values = {
        "password": quote(password, safe=""),
        "port": str(free_port()),
        "good": good,
        "secret": bad_secret,
    }
    env = {name: value.format(**values) for name, value in template.items()}
    server = refusing_server(tmp_path, env, good)

    server.launch()
    code = server.wait_exit(60)
    if code is None:
        server.stop()
    log = server.log_tail(10_000)

    assert code not in (None, 0), f"the server did not refuse to start:\n{log}"
    assert expected in log, log
    named: dict[str, Iterable[str]] = {
        "API key": [server.api_key],
        "signing secret": signing_secret_forms(good),
        "malformed signing secret": [bad_secret],
        "database password": password_forms(password),
    }
    assert leaked_lines(log, named) == []
