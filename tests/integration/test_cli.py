"""``python -m app keys …`` as a subprocess, on SQLite and PostgreSQL.

The command is configured by the server's environment only; these run it the way
an operator does and check what it prints, its exit status, and what it stored.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.datastructures import Secret
from starlette.exceptions import StarletteDeprecationWarning
from tortoise import connections

from app.db import close_database, open_database
from app.main import create_app
from app.settings import Settings
from app.store import Store
from baton.signing import generate_secret

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

PROJECT_ROOT = Path(__file__).resolve().parents[2]
KEY_LINE = re.compile(r"^key:\s+(bk_\S+)$", re.M)
ID_LINE = re.compile(r"^id:\s+(key_[0-9a-f]{16})$", re.M)


def cli(
    database_url: str, *args: str, cwd: Path, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m app ARGS`` with only BATON_DATABASE_URL set, like an operator."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
    env["BATON_DATABASE_URL"] = database_url
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=cwd,  # no stray .env is read
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    assert "Traceback" not in result.stderr
    return result.stdout


def refused(result: subprocess.CompletedProcess[str], status: int) -> str:
    assert result.returncode == status, f"exit {result.returncode}: {result.stdout}"
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.strip()
    return result.stderr


async def stored(database_url: str, table: str) -> list[dict[str, Any]]:
    """Every row of ``table``, read directly."""
    await open_database(database_url)
    try:
        name = "sqlite" if database_url.startswith("sqlite") else "postgres"
        _, rows = await connections.get(name).execute_query(f"SELECT * FROM {table}")
        return [dict(r) for r in rows]
    finally:
        await close_database()


async def test_create_list_and_revoke(database_url: str, tmp_path: Path) -> None:
    created = ok(cli(database_url, "keys", "create", "--namespace", "acme", cwd=tmp_path))
    key_match, id_match = KEY_LINE.search(created), ID_LINE.search(created)
    assert key_match and id_match, created
    key, key_id = key_match.group(1), id_match.group(1)
    assert "namespace:      acme" in created

    listing = ok(cli(database_url, "keys", "list", cwd=tmp_path))
    assert key_id in listing and "acme" in listing and key[:10] in listing
    assert key not in listing
    [entry] = json.loads(ok(cli(database_url, "keys", "list", "--json", cwd=tmp_path)))
    assert entry["id"] == key_id and entry["revokedAt"] is None
    assert key not in json.dumps(entry)

    rows = await stored(database_url, "api_keys")
    assert len(rows) == 1
    assert rows[0]["key_hash"] == hashlib.sha256(key.encode()).hexdigest()
    assert key not in " ".join(str(v) for v in rows[0].values())

    revoked = ok(cli(database_url, "keys", "revoke", key_id, cwd=tmp_path))
    assert f"revoked {key_id}" in revoked
    again = ok(cli(database_url, "keys", "revoke", key_id, cwd=tmp_path))
    assert "already revoked" in again
    [entry] = json.loads(ok(cli(database_url, "keys", "list", "--json", cwd=tmp_path)))
    assert entry["revokedAt"] is not None

    unknown = refused(cli(database_url, "keys", "revoke", "key_0000000000000000", cwd=tmp_path), 1)
    assert "no API key" in unknown


async def test_namespace_signing_secrets(database_url: str, tmp_path: Path) -> None:
    given = generate_secret()
    created = ok(
        cli(
            database_url,
            "keys",
            "create",
            "--namespace",
            "acme",
            "--signing-secret",
            given,
            "--json",
            cwd=tmp_path,
        )
    )
    document = json.loads(created)
    assert document["namespace"] == "acme" and document["key"].startswith("bk_")
    assert "signingSecret" not in document  # only a generated secret is printed

    shown = ok(cli(database_url, "keys", "secret", "--namespace", "acme", cwd=tmp_path))
    assert "fingerprint" in shown and given not in shown

    generated = ok(
        cli(database_url, "keys", "secret", "--namespace", "acme", "--generate", cwd=tmp_path)
    )
    match = re.search(r"^signing secret: (whsec_\S+)$", generated, re.M)
    assert match, generated
    assert "2 secrets sign" in generated

    piped = generate_secret()
    replaced = ok(
        cli(
            database_url,
            "keys",
            "secret",
            "--namespace",
            "acme",
            "--set",
            "-",
            cwd=tmp_path,
            stdin=piped + "\n",
        )
    )
    assert "secret signs" in replaced and piped not in replaced
    rows = await stored(database_url, "namespace_secrets")
    assert [(r["namespace"], r["secret"]) for r in rows] == [("acme", piped)]

    cleared = ok(
        cli(database_url, "keys", "secret", "--namespace", "acme", "--clear", cwd=tmp_path)
    )
    assert "BATON_SIGNING_SECRETS" in cleared
    assert await stored(database_url, "namespace_secrets") == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param([], "required", id="no-command"),
        pytest.param(["keys"], "required", id="no-action"),
        pytest.param(["keys", "create"], "--namespace", id="no-namespace"),
        pytest.param(["keys", "create", "--namespace", "Acme"], "namespace", id="bad-namespace"),
        pytest.param(["keys", "create", "--namespace", "a/b"], "namespace", id="slash"),
        pytest.param(
            ["keys", "create", "--namespace", "acme", "--signing-secret", "whsec_%%secret%%"],
            "not valid",
            id="bad-secret",
        ),
        pytest.param(
            ["keys", "secret", "--namespace", "acme", "--add", "whsec_c2hvcnQ="],
            "too short",
            id="short-secret",
        ),
        pytest.param(
            ["keys", "secret", "--namespace", "default", "--generate"],
            "BATON_SIGNING_SECRETS",
            id="default-secret",
        ),
        pytest.param(
            ["keys", "secret", "--namespace", "acme", "--set", "whsec_x", "--clear"],
            "not allowed",
            id="set-and-clear",
        ),
        pytest.param(["keys", "revoke"], "ID", id="no-id"),
        pytest.param(["keys", "rotate"], "invalid choice", id="unknown-action"),
    ],
)
def test_bad_command_lines_exit_2_with_a_message(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = cli(f"sqlite://{tmp_path}/db.sqlite3", *args, cwd=tmp_path)
    error = refused(result, 2)
    assert message in error
    assert "%%secret%%" not in error and "c2hvcnQ" not in error  # secrets are never echoed


@pytest.mark.parametrize(
    "database_url",
    [
        pytest.param("mysql://root@localhost/baton", id="unsupported"),
        pytest.param("postgres://postgres@127.0.0.1:1/nowhere", id="unreachable"),
    ],
)
def test_a_database_it_cannot_use_exits_1_with_a_message(tmp_path: Path, database_url: str) -> None:
    error = refused(cli(database_url, "keys", "list", cwd=tmp_path), 1)
    assert "database" in error.lower()


# --------------------------------------------------------------------------- across processes


@contextlib.contextmanager
def serving(database_url: str, data_dir: Path) -> Iterator[TestClient]:
    app = create_app(
        Settings(
            database_url=database_url,
            data_dir=data_dir,
            api_keys=(Secret("env-key"),),
            signing_secrets=(Secret(generate_secret()),),
        )
    )
    client = TestClient(app, raise_server_exceptions=False)
    client.__enter__()
    try:
        yield client
    finally:
        closer = threading.Thread(target=client.__exit__, args=(None, None, None), daemon=True)
        closer.start()
        closer.join(15)
        assert not closer.is_alive(), "the app did not shut down"


def test_keys_made_and_revoked_by_the_cli_apply_to_a_running_server_at_once(
    database_url: str, tmp_path: Path
) -> None:
    with serving(database_url, tmp_path) as server:
        created = ok(cli(database_url, "keys", "create", "--namespace", "acme", cwd=tmp_path))
        key_match, id_match = KEY_LINE.search(created), ID_LINE.search(created)
        assert key_match and id_match
        headers = {"Authorization": f"Bearer {key_match.group(1)}"}
        body = {"id": "mine", "steps": [{"id": "a", "url": "https://handler.example/a"}]}
        assert server.post("/v1/workflows", json=body, headers=headers).status_code == 201
        assert server.get("/v1/workflows/mine", headers=headers).status_code == 200
        env_headers = {"Authorization": "Bearer env-key"}
        assert server.get("/v1/workflows/mine", headers=env_headers).status_code == 404

        ok(cli(database_url, "keys", "revoke", id_match.group(1), cwd=tmp_path))
        response = server.get("/v1/workflows/mine", headers=headers)
        assert response.status_code == 401
        assert response.headers["content-type"].startswith("application/problem+json")


async def test_the_cli_migrates_a_fresh_database(database_url: str, tmp_path: Path) -> None:
    ok(cli(database_url, "keys", "list", cwd=tmp_path))
    await open_database(database_url)
    try:
        assert await Store().list_api_keys() == []
    finally:
        await close_database()
