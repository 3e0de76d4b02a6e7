"""Fixtures for the end-to-end tests: real uvicorn processes on loopback ports.

- ``handler_app`` (session): the scripted handler of ``handler_app.py``.
- ``handler`` (function): a ``HandlerClient`` confined to a fresh namespace, so tests
  sharing a server never see each other's requests.
- ``baton`` (module): one Baton server on a fresh database for the module's tests, which
  stay independent by using their own workflow ids and handler namespace.
- ``api`` (function): a ``BatonClient`` for ``baton``.
- ``baton_factory`` (function): a ``BatonFactory`` for servers a test owns (extra env,
  restarts, ``kill -9``, several on one database); all are stopped at teardown.

Databases are SQLite files in a temporary directory, or fresh PostgreSQL databases when
``BATON_E2E_POSTGRES_URL`` names a PostgreSQL server (a user that may create databases).
When a test fails, the tails of the logs of the processes it used are printed.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    BatonClient,
    BatonFactory,
    BatonServer,
    HandlerApp,
    HandlerClient,
    UvicornProcess,
    random_signing_secret,
)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def signing_secret() -> str:
    """The secret every Baton server signs with and the handler app verifies with."""
    return random_signing_secret()


@pytest.fixture(scope="session")
def handler_app(
    tmp_path_factory: pytest.TempPathFactory, signing_secret: str
) -> Iterator[HandlerApp]:
    app = HandlerApp(tmp_path_factory.mktemp("handler") / "handler.log", signing_secret)
    app.start()
    try:
        yield app
    finally:
        app.stop()


@pytest.fixture
def handler(handler_app: HandlerApp) -> Iterator[HandlerClient]:
    with handler_app.client() as root:
        root.reset()
        yield root.scoped()


@pytest.fixture(scope="module")
def baton(tmp_path_factory: pytest.TempPathFactory, signing_secret: str) -> Iterator[BatonServer]:
    with BatonFactory(tmp_path_factory.mktemp("baton"), signing_secret) as factory:
        yield factory.create()


@pytest.fixture
def api(baton: BatonServer) -> Iterator[BatonClient]:
    with baton.client() as client:
        yield client


@pytest.fixture
def baton_factory(tmp_path: Path, signing_secret: str) -> Iterator[BatonFactory]:
    with BatonFactory(tmp_path, signing_secret) as factory:
        yield factory


@pytest.fixture(autouse=True)
def _logs_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    reports = [getattr(request.node, f"report_{when}", None) for when in ("setup", "call")]
    if not any(report is not None and report.failed for report in reports):
        return
    processes: list[UvicornProcess] = []
    for value in request.node.funcargs.values():
        if isinstance(value, UvicornProcess):
            processes.append(value)
        elif isinstance(value, BatonFactory):
            processes.extend(value.servers)
    for process in dict.fromkeys(processes):
        print(f"\n--- tail of {process.label} log {process.log_path} ---\n{process.log_tail()}")
