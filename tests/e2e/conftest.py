"""Fixtures for the end-to-end tests: real uvicorn processes on loopback ports.

- ``handler_app`` (session): the scripted handler of ``handler_app.py``.
- ``handler`` (function): a ``HandlerClient`` confined to a fresh namespace, so tests
  sharing a server never see each other's requests.
- ``baton`` (module): one Baton server on a fresh database for the module's tests, which
  stay independent by using their own workflow ids and handler namespace.
- ``api`` (function): a ``BatonClient`` for ``baton``.
- ``baton_factory`` (function): starts servers of the test's own (extra env, restarts,
  ``kill -9``); all are stopped at teardown.

Databases are SQLite files in a temporary directory, or fresh PostgreSQL databases when
``BATON_E2E_POSTGRES_URL`` names a PostgreSQL server (a user that may create databases).
When a test fails, the tails of the logs of the processes it used are printed.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    BatonClient,
    BatonServer,
    HandlerApp,
    HandlerClient,
    UvicornProcess,
    postgres_database,
    random_signing_secret,
)

POSTGRES_ENV = "BATON_E2E_POSTGRES_URL"


class BatonFactory:
    """Starts Baton servers for one test and stops whatever is left at teardown."""

    def __init__(self, root: Path, signing_secret: str, stack: contextlib.ExitStack):
        self.root = root
        self.signing_secret = signing_secret
        self.servers: list[BatonServer] = []
        self._stack = stack

    def database_url(self) -> str | None:
        """A fresh PostgreSQL database if configured; ``None`` means SQLite in the data dir."""
        admin_url = os.environ.get(POSTGRES_ENV)
        if not admin_url:
            return None
        return self._stack.enter_context(postgres_database(admin_url))

    def create(self, *, start: bool = True, **kwargs: Any) -> BatonServer:
        """A server on its own data dir (``data_dir=`` to share one, e.g. after a kill)."""
        data_dir = kwargs.pop("data_dir", None) or self.root / f"baton-{len(self.servers)}"
        kwargs.setdefault("signing_secret", self.signing_secret)
        if "database_url" not in kwargs:
            kwargs["database_url"] = self.database_url()
        server = BatonServer(data_dir, **kwargs)
        self.servers.append(server)
        if start:
            server.start()
        return server

    def stop_all(self) -> None:
        for server in self.servers:
            server.stop()


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
    with contextlib.ExitStack() as stack:
        factory = BatonFactory(tmp_path_factory.mktemp("baton"), signing_secret, stack)
        try:
            yield factory.create()
        finally:
            # Before the ExitStack drops any PostgreSQL database the server uses.
            factory.stop_all()


@pytest.fixture
def api(baton: BatonServer) -> Iterator[BatonClient]:
    with baton.client() as client:
        yield client


@pytest.fixture
def baton_factory(tmp_path: Path, signing_secret: str) -> Iterator[BatonFactory]:
    with contextlib.ExitStack() as stack:
        factory = BatonFactory(tmp_path, signing_secret, stack)
        try:
            yield factory
        finally:
            factory.stop_all()


@pytest.fixture(autouse=True)
def _logs_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    failed = any(
        getattr(request.node, f"report_{when}", None) is not None
        and getattr(request.node, f"report_{when}").failed
        for when in ("setup", "call")
    )
    if not failed:
        return
    processes: list[UvicornProcess] = []
    for value in request.node.funcargs.values():
        if isinstance(value, UvicornProcess):
            processes.append(value)
        elif isinstance(value, BatonFactory):
            processes.extend(value.servers)
    for process in dict.fromkeys(processes):
        print(f"\n--- tail of {process.label} log {process.log_path} ---\n{process.log_tail()}")
