"""The client installs alone: a fresh virtual environment, ``pip install ./clients/python``,
and nothing of the server comes with it."""

from __future__ import annotations

import json
import shutil
import subprocess
import venv
from pathlib import Path

import pytest

CLIENT = Path(__file__).resolve().parents[1]
#: Distributions only the server needs; none may arrive with the client.
SERVER_ONLY = {
    "tortoise-orm", "uvicorn", "asyncpg", "aiosqlite", "apscheduler", "starlette", "pydantic",
    "orjson", "cel-expr-python", "prometheus-client", "swagger-ui-py", "aiohttp",
    "httpx-aiohttp", "fastapi", "flask", "django",
}  # fmt: skip


@pytest.mark.slow
def test_the_client_installs_alone_without_the_server(tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"

    def run(*argv: str) -> str:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, f"{argv}\n{done.stdout}\n{done.stderr}"
        return done.stdout

    # From a copy: building in place would leave build/ and *.egg-info in the source tree.
    source = shutil.copytree(
        CLIENT, tmp_path / "client", ignore=shutil.ignore_patterns("build", "*.egg-info", "tests")
    )
    run(str(python), "-m", "pip", "install", "--quiet", str(source))

    installed = {
        item["name"].lower()
        for item in json.loads(run(str(python), "-m", "pip", "list", "--format", "json"))
    }
    assert "baton-workflow-client" in installed
    assert not installed & SERVER_ONLY, f"server dependencies came along: {installed & SERVER_ONLY}"
    assert {"httpx", "itsdangerous", "rich", "httpx-sse"} <= installed

    # The package works from there: the client, the worker, signing, the command.
    run(
        str(python),
        "-c",
        (
            "import baton, baton.client, baton.worker, baton.cli; "
            "from baton import Client, AsyncClient, ProblemError, Worker, verify, Signer; "
            "import time; s = baton.generate_secret(); "
            "verify(b'{}', Signer(s).headers('m', time.time(), b'{}'), s)"
        ),
    )
    assert "baton" in run(str(env_dir / "bin" / "baton"), "--version")

    # A framework helper without its extra says which one to install.
    done = subprocess.run(
        [str(python), "-c", "import baton.flask"], capture_output=True, text=True, check=False
    )
    assert done.returncode != 0 and "No module named 'flask'" in done.stderr
